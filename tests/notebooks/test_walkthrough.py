"""notebooks/walkthrough.ipynb runs top to bottom (small settings), and is committed without outputs."""

from __future__ import annotations

import re

import nbformat
import pytest

from tests.helpers.environment import ROOT

NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"


def test_the_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"cell {index} has outputs: strip them"
            )


def test_colab_link_and_readme_point_at_the_notebook():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    first = notebook.cells[0].source
    link = re.search(r"https://colab\.research\.google\.com/github/([^)\s]+)", first)
    assert link and link.group(1).endswith("/blob/main/notebooks/walkthrough.ipynb")
    install = notebook.cells[1].source
    assert "google.colab" in install and "pip install" in install and "terrabeam[view]" in install
    readme = (ROOT / "README.md").read_text()
    assert "notebooks/walkthrough.ipynb" in readme and link.group(0) in readme


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("TERRABEAM_WALKTHROUGH_SMALL", "1")
    monkeypatch.setenv("TERRABEAM_WALKTHROUGH_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("TERRABEAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EE_PROJECT", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, when a cell fails

    def outputs(index: int) -> list:
        return notebook.cells[index].outputs

    def text(index: int) -> str:
        return "".join(
            o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs(index)
        )

    nbformat.write(notebook, tmp_path / "walkthrough-run.ipynb")  # to look at when something is off
    code = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
    find = lambda needle: next(i for i in code if needle in notebook.cells[i].source)  # noqa: E731
    assert (tmp_path / "work" / "data" / "manifest.json").exists()
    assert "Extraction: " in text(find('"pipelines.extract"'))  # its progress lines
    assert "train:" in text(find('manifest["splits"]'))
    assert any("image/png" in o.get("data", {}) for o in outputs(find("decode_example")))
    assert "the best so far" in text(find("TrainConfig("))
    assert "overall accuracy" in text(find("metrics.json"))
    assert any("image/png" in o.get("data", {}) for o in outputs(find("confusion_matrix.png")))
    assert (tmp_path / "work" / "predictions" / "classes.tif").exists()
    viewer = text(find("start(PREDICTIONS)"))
    assert "http://127.0.0.1:" in viewer and "IFrame" in viewer
    assert "Set EE_PROJECT" in text(find("ee.Initialize"))
