import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from kvasir_mobileone.commands.download import download
from kvasir_mobileone.data.download import FOLDER, DownloadError
from kvasir_mobileone.data.synth import KVASIR_CLASSES


def kvasir_like_zip() -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name in KVASIR_CLASSES:
            archive.writestr(f"{FOLDER}/{name}/0001.jpg", rng.bytes(8000))  # incompressible, so the zip is big
        archive.writestr("__MACOSX/._junk", b"x")
    return buffer.getvalue()


class Server:
    """A real HTTP server on 127.0.0.1 that honours Range and can cut a transfer off halfway."""

    def __init__(self, payload: bytes):
        self.payload, self.cut_next, self.ranges, self.wrong_start = payload, False, [], False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/kvasir.zip":
                    self.send_error(404)
                    return
                header = self.headers.get("Range")
                server.ranges.append(header)
                start = int(header.split("=")[1].split("-")[0]) if header else 0
                if server.wrong_start:  # a server (or proxy) that answers a range other than the one asked for
                    start = 0
                body = server.payload[start:]
                self.send_response(206 if header else 200)
                if header:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_next:
                    server.cut_next = False
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = Server(kvasir_like_zip())
    yield s
    s.httpd.shutdown()


def test_cut_off_download_resumes_then_second_run_does_nothing(tmp_path, server):
    server.cut_next = True
    with pytest.raises(DownloadError, match="again to resume"):
        download(str(tmp_path), url=f"{server.url}/kvasir.zip")
    part = tmp_path / "kvasir-dataset-v2.zip.part"
    assert 0 < part.stat().st_size < len(server.payload)

    folder = download(str(tmp_path), url=f"{server.url}/kvasir.zip", expected_size=len(server.payload))
    assert server.ranges == [None, f"bytes={len(server.payload) // 2}-"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(KVASIR_CLASSES)
    assert not (tmp_path / "__MACOSX").exists() and not part.exists()

    download(str(tmp_path), url=f"{server.url}/kvasir.zip")
    assert len(server.ranges) == 2  # nothing fetched the second time


def test_http_error_explains_manual_download(tmp_path, server):
    with pytest.raises(DownloadError, match="HTTP 404.*by hand"):
        download(str(tmp_path), url=f"{server.url}/missing.zip")


def test_offline_explains_manual_download(tmp_path):
    with pytest.raises(DownloadError, match="Could not reach.*by hand"):
        download(str(tmp_path), url="http://127.0.0.1:9/kvasir.zip")


def test_wrong_zip_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "kvasir-dataset-v2.zip", "w") as archive:
        archive.writestr("other/file.txt", "x")
    with pytest.raises(DownloadError, match="lacks the class folders"):
        download(str(tmp_path))


def test_a_206_from_the_wrong_byte_is_refused_not_appended(tmp_path, server):
    part = tmp_path / "kvasir-dataset-v2.zip.part"
    part.write_bytes(server.payload[:1000])
    server.wrong_start = True
    with pytest.raises(DownloadError, match="bytes from 0 on.*holds 1,000 bytes"):
        download(str(tmp_path), url=f"{server.url}/kvasir.zip")
    assert part.stat().st_size == 1000  # nothing appended


def test_size_mismatch_is_refused(tmp_path, server):
    with pytest.raises(DownloadError, match="expected"):
        download(str(tmp_path), url=f"{server.url}/kvasir.zip", expected_size=len(server.payload) + 1)


def test_damaged_zip_is_refused(tmp_path):
    payload = bytearray(kvasir_like_zip())
    offset = payload.index(b"0001.jpg") + len(b"0001.jpg") + 100  # inside the first member's stored data
    payload[offset] ^= 0xFF
    (tmp_path / "kvasir-dataset-v2.zip").write_bytes(bytes(payload))
    with pytest.raises(DownloadError, match="bad CRC"):
        download(str(tmp_path))


def test_an_incomplete_earlier_extraction_is_moved_aside(tmp_path, server):
    (tmp_path / FOLDER / "polyps").mkdir(parents=True)  # a left-over from an extraction that was killed
    folder = download(str(tmp_path), url=f"{server.url}/kvasir.zip")
    assert sorted(p.name for p in folder.iterdir()) == sorted(KVASIR_CLASSES)
    assert len(list(tmp_path.glob(f".{FOLDER}.incomplete-*"))) == 1


def test_hyper_kvasir_downloads_into_its_nested_layout_and_says_what_to_do_offline(tmp_path):
    from kvasir_mobileone.data.catalog import HYPER_KVASIR
    from kvasir_mobileone.data.folder import find_class_folders

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in HYPER_KVASIR.paths:
            archive.writestr(f"labeled-images/{path}/0001-{path.rsplit('/', 1)[1]}.jpg", b"x" * 100)
    server = Server(buffer.getvalue())
    try:
        url = f"{server.url}/kvasir.zip"
        folder = download(str(tmp_path), dataset="hyper-kvasir", url=url)
    finally:
        server.httpd.shutdown()
    assert folder == tmp_path / "labeled-images" and (tmp_path / "hyper-kvasir-labeled-images.zip").is_file()
    layout = find_class_folders(folder)
    assert layout.kind == "nested" and sorted(layout.classes) == sorted(HYPER_KVASIR.classes)
    with pytest.raises(DownloadError, match="hyper-kvasir-labeled-images.zip.*labeled-images/ holds the 23 class"):
        download(str(tmp_path / "offline"), dataset="hyper-kvasir", url="http://127.0.0.1:9/x.zip")
    with zipfile.ZipFile(tmp_path / "k.zip", "w") as archive:  # a Kvasir v2 zip under the HyperKvasir name
        archive.writestr("kvasir-dataset-v2/polyps/1.jpg", b"x")
    (tmp_path / "wrong").mkdir()
    (tmp_path / "k.zip").rename(tmp_path / "wrong" / "hyper-kvasir-labeled-images.zip")
    with pytest.raises(DownloadError, match="lacks the class folders.*is it HyperKvasir"):
        download(str(tmp_path / "wrong"), dataset="hyper-kvasir")
