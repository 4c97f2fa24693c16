"""An unreadable image's error names its path once."""

from __future__ import annotations

import pytest

from aimass.data.images import open_image
from aimass.errors import DataError


def test_a_corrupt_image_named_by_its_path_is_named_once(tmp_path):
    path = tmp_path / "imgs" / "red" / "broken.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 2)
    with pytest.raises(DataError) as caught:
        open_image(path, where=str(path))  # how training's preprocessing names an image
    assert str(caught.value).count(str(path)) == 1
    assert caught.value.where == str(path) and caught.value.message.startswith("broken.jpg is corrupt")


@pytest.mark.parametrize("item", [None, 123, "", ["a.png"]])
def test_what_is_not_an_image_is_a_data_error_naming_it(item):
    """``predict([None])`` reached ``Path(None)``: a bare TypeError from deep inside."""
    with pytest.raises(DataError) as caught:
        open_image(item, where="image 3")
    assert caught.value.message.startswith(f"image 3 is {type(item).__name__} ")
    assert "file path" in caught.value.hint
