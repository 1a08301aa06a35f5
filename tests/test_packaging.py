"""What `pip install .` (a wheel, not the editable checkout) ships: every product package, listed by hand
in pyproject.toml, so one added later is not silently left out of the wheel."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_SHIPPED = {"tests", "bench", "build", ".venv"}


def test_every_package_in_the_tree_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts) for init in ROOT.rglob("__init__.py")
             if init.relative_to(ROOT).parts[0] not in NOT_SHIPPED}
    assert found - listed == set(), "packages missing from pyproject.toml [tool.setuptools] packages"
    assert listed - found == set(), "pyproject.toml lists packages that do not exist"
