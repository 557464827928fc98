"""Text files that are not UTF-8: an error naming the file, the line and column of the bad byte (issue 14)."""

from __future__ import annotations

import pytest

from stad.config import load_config
from stad.data.ava import read_labelmap
from stad.errors import StadError
from stad.eval.predictions import read_frame_detections
from stad.textio import read_text


def test_a_bad_byte_is_named_with_file_line_and_column(tmp_path):
    path = tmp_path / "dets.csv"
    path.write_bytes(b"video,frame\nv1,1\nv2,\xff3\n")
    with pytest.raises(StadError, match=r"dets\.csv: not UTF-8 text \(byte 0xff at line 3, column 4\); expected a table"):
        read_text(path, what="a table")


@pytest.mark.parametrize("reader, name, what", [
    (read_frame_detections, "dets.csv", "a detections CSV"),
    (read_labelmap, "map.pbtxt", "an AVA label map"),
    (load_config, "cfg.yaml", "a YAML config"),
])
def test_readers_name_the_file(tmp_path, reader, name, what):
    path = tmp_path / name
    path.write_bytes(b"abc\n\xfe\n")
    with pytest.raises(StadError, match=rf"{name}: not UTF-8 text \(byte 0xfe at line 2, column 1\); expected {what}"):
        reader(path)


def test_utf8_text_is_read_as_it_is(tmp_path):
    path = tmp_path / "ok.txt"
    path.write_text("vidéo,1\n", encoding="utf-8")
    assert read_text(path) == "vidéo,1\n"
    with pytest.raises(FileNotFoundError):
        read_text(tmp_path / "missing.txt")
