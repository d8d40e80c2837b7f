"""Every TOML file ops keep is read one way: what cannot be read, parsed or validated is one line naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from client.settings_files import SettingsFileError, load_toml


class Sample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: int


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (None, "cannot read the sample file"),  # a directory where the file should be
        (b"days = \xff\xfe\n", "cannot read the sample file"),  # not UTF-8
        (b"days = [\n", "is not valid TOML"),
        (b"days = 'many'\nweeks = 2\n", "is invalid: days: Input should be a valid integer"),
        (b"days = 1\n" + b"# padding\n" * 200_000, None),  # a large file is read whole
    ],
)
def test_a_file_that_cannot_be_used_says_which_and_why_in_one_line(tmp_path: Path, content: bytes | None, complaint: str | None):
    path = tmp_path / "sample.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    if complaint is None:
        assert load_toml(path, "sample file", Sample.model_validate) == Sample(days=1)
        return
    with pytest.raises(SettingsFileError) as refused:
        load_toml(path, "sample file", Sample.model_validate)
    message = str(refused.value)
    assert complaint in message and str(path) in message and "\n" not in message
