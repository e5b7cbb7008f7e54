"""The package's shape: a sorted explicit surface, and a core that imports no UI or SDK."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import notebook_kit as kit

HEAVY = ["pandas", "tqdm", "ipywidgets", "IPython", "openai", "anthropic", "numpy"]


def modules_after(statement: str) -> list[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def test_engine_imports_no_pandas_tqdm_widgets_or_sdk() -> None:
    loaded = modules_after("import notebook_kit.engine")
    assert not [m for m in HEAVY if m in loaded]


def test_importing_the_package_is_light() -> None:
    loaded = modules_after("import notebook_kit")
    assert not [m for m in HEAVY if m in loaded]


def test_every_public_name_resolves_and_is_re_exported_for_type_checkers() -> None:
    for name in kit.__all__:
        assert getattr(kit, name) is not None
    source = (Path(kit.__file__).parent / "__init__.py").read_text()
    block = ast.parse(source).body
    checked = next(n for n in block if isinstance(n, ast.If))  # `if TYPE_CHECKING:`
    exported = sorted(
        alias.name
        for node in checked.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname == alias.name  # `import X as X`: what mypy --strict calls explicit
    )
    assert exported == kit.__all__


def test_no_submodule_shadows_a_public_name() -> None:
    code = (
        "import notebook_kit as kit, pkgutil, importlib\n"
        "for m in pkgutil.walk_packages(kit.__path__, 'notebook_kit.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "bad = [n for n in kit.__all__ if type(getattr(kit, n)).__name__ == 'module']\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        kit.run_dataframe  # noqa: B018
    except AttributeError as exc:
        assert "run_dataframe" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_a_script_gets_a_text_bar_and_no_widgets() -> None:
    code = (
        "import sys, pandas as pd, notebook_kit as kit\n"
        "df = pd.DataFrame({'p': ['a', 'b']})\n"
        "r = kit.run_df_sync(df, 'p', provider=kit.DemoProvider(latency=0))\n"
        "print('ipywidgets' in sys.modules, list(r.status))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False ['ok', 'ok']"
    assert "2/2" in out.stderr and "ok=2" in out.stderr  # tqdm's text bar on stderr
