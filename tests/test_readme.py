"""The README's audience sections start with command blocks that run as written."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def first_sh_block(section):
    """The commands of the first ```sh block under the README heading `## section`."""
    with open(README) as f:
        text = f.read()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", body, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def run_block(lines, cwd):
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""), MPLBACKEND="Agg")
    for line in lines:
        line = re.sub(r"^python ", f"{sys.executable} ", line)
        r = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, f"{line!r} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the block makes its model with torch")
def test_compressing_a_model_block_runs(tmp_path):
    lines = first_sh_block("Compressing a model")
    run_block(lines, tmp_path)
    assert (tmp_path / "model.nnr").stat().st_size > 0
    assert (tmp_path / "restored.pt").exists()
    assert (tmp_path / "rd.md").read_text().count("|") > 20 and (tmp_path / "rd.csv").exists()


def test_generating_test_material_block_runs(tmp_path):
    lines = first_sh_block("Generating test material")
    run_block(lines, tmp_path)
    assert (tmp_path / "material" / "manifest.json").exists()
