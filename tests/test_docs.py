"""The README's promises that can be checked mechanically."""

from dataclasses import fields
from pathlib import Path

from stonechat.server.settings import ServerSettings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    missing = [f.name for f in fields(ServerSettings) if f"`{f.name}`" not in readme]
    assert not missing, f"README settings table lacks: {missing}"


def test_readme_shows_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert "\nrun:" in makefile and "\ntest:" in makefile
