"""YAML configs by name + dotlist overrides, and the `zoo` command."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import registry
from zoo.cli import main
from zoo.config import config_dirs, layer_yaml, resolve_layer

CONFIGS = Path(__file__).parent.parent / "configs" / "layers"


def test_the_registry_is_not_empty():
    assert registry.list(), "registry.list() is empty: the tests parametrised over it would run nothing"


@pytest.mark.parametrize("name", registry.list())
def test_every_builtin_has_a_yaml_in_sync_with_its_dataclass(name):
    if not registry.get(name).source == "builtin":
        pytest.skip("plugins ship their own configs")
    path = CONFIGS / f"{name}.yaml"
    assert path.is_file(), f"missing {path}; write it with zoo.config.layer_yaml({name!r})"
    assert OmegaConf.load(path) == OmegaConf.create(layer_yaml(name)), f"{path} drifted from the dataclass defaults"
    registry.build(OmegaConf.load(path))


def test_layer_config_by_name_with_overrides():
    resolved = resolve_layer("las", ["n_heads=4", "causal=true", "alpha_max=0.25"], d_model=64)
    layer = resolved.build()
    assert (layer.config.n_heads, layer.config.causal, layer.config.alpha_max, layer.d_model) == (4, True, 0.25, 64)
    assert resolve_layer(resolved, d_model=64) is resolved  # resolved once: no second validation
    assert resolve_layer("long_conv", d_model=8, max_len=77).config.max_len == 77  # injected: needs_max_len
    assert "max_len" not in resolve_layer("las", max_len=77).to_dict()


def test_layer_config_errors():
    with pytest.raises(registry.ConfigError, match="no config key 'n_head'"):
        resolve_layer("las", ["n_head=4"])
    with pytest.raises(ValueError, match="key=value"):
        resolve_layer("las", ["n_heads"])
    with pytest.raises(FileNotFoundError):
        resolve_layer("nope/missing.yaml")
    with pytest.raises(registry.UnknownNameError, match="Did you mean 'smooth'"):
        resolve_layer("smoth")
    with pytest.raises(registry.ConfigError, match="d_model=30 is not divisible by n_heads=8"):
        resolve_layer("las", d_model=30)


def test_config_path_env(tmp_path, monkeypatch):
    (tmp_path / "layers").mkdir()
    (tmp_path / "layers" / "my_las.yaml").write_text("name: las\nd_model: 32\nn_heads: 2\n")
    monkeypatch.setenv("ZOO_CONFIG_PATH", str(tmp_path))
    assert config_dirs()[0] == tmp_path
    assert resolve_layer("my_las").build().config.n_heads == 2


def test_cli_list_describe_info(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "las_chunk" in out and "complexity" in out
    assert main(["describe", "las", "pool_size=5"]) == 0
    assert "pool_size: 5" in capsys.readouterr().out
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    lines = {tuple(line.split()[:2]): line for line in out.splitlines() if line.startswith("  ")}
    assert "no: device=cpu (supported: cuda)" in lines[("xformers", "attention")]  # no GPU here
    assert lines[("reference", "attention")].endswith("yes")
    # the CPU picks: SDPA for plain attention, the reference kernel for decay with gradients (no flex backward)
    assert lines[("vanilla", "sdpa")].split()[-1] == "sdpa" and lines[("las", "reference")].split()[-1] == "flex"


def test_cli_errors_are_clear(capsys):
    assert main(["describe", "lass"]) == 2
    assert "Did you mean 'las'" in capsys.readouterr().err
    assert main(["describe", "las", "n_head=4"]) == 2
    assert "Valid keys" in capsys.readouterr().err


def test_cli_bench_writes_table_json_plot_and_saved_runs(tmp_path, capsys):
    args = ["bench", "--layers", "vanilla", "smooth", "las", "--lengths", "32", "64", "--reps", "3", "--d-model", "64",
            "--storage", str(tmp_path / "store")]
    assert main([*args, "--out", str(tmp_path), "--save", "first"]) == 0
    out = capsys.readouterr().out
    assert "x vanilla" in out and "rel err vs ref" in out and "las[materialised]" in out
    data = json.loads((tmp_path / "bench.json").read_text())
    rows = {(r["layer"], r["length"]): r for r in data["rows"]}
    assert rows[("vanilla", 32)]["ratio"] == 1.0
    assert all(r["ms"] > 0 and r["peak_mib"] >= 0 and len(r["times_ms"]) == 3 for r in data["rows"])
    assert rows[("las", 64)]["rel_err"] < 1e-5 and rows[("las[materialised]", 64)]["kernel"] == "reference"
    assert (tmp_path / "bench.png").stat().st_size > 0 and "Command:" in (tmp_path / "bench.md").read_text()
    saved = list((tmp_path / "store").glob("*/0001_first.json"))
    assert len(saved) == 1 and len(json.loads(saved[0].read_text())["benchmarks"]) == 8
    assert main([*args, "--save", "second"]) == 0
    capsys.readouterr()
    rc = main(["bench", "--storage", str(tmp_path / "store"), "--compare", "first", "second", "--threshold", "1000"])
    out = capsys.readouterr().out
    assert rc == 0 and "0 regression(s)" in out and out.count("same (within noise)") == 8
    # pytest-benchmark's own tool reads the saved runs
    files = sorted(str(p) for p in (tmp_path / "store").glob("*/*.json"))
    tool = subprocess.run([sys.executable, "-m", "pytest_benchmark", "--storage", str(tmp_path / "store"), "compare",
                           *files], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert tool.returncode == 0 and "las[materialised][64]" in tool.stdout, tool.stderr


def run_cli(argv) -> int:
    """``zoo ARGV`` in-process: the exit code, whether argparse or the command decided it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_cli_bench_rejects_bad_input_in_one_line(capsys):
    for argv, why in ((["bench", "--device", "tpu"], "'tpu' is not a device"),
                      (["bench", "--lengths", "0"], "must be a positive integer, got 0"),
                      (["bench", "--layers", "lass"], "Did you mean 'las'")):
        code = run_cli(argv)
        err = capsys.readouterr().err
        assert code == 2 and why in err and err.count("\n") == 1, (argv, err)


def test_console_script_help():
    exe = Path(sys.executable).parent / "zoo"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert out.returncode == 0 and "registry" in out.stdout
    for command in ("list", "describe", "info", "bench", "train", "compare", "data"):
        assert f"    {command} " in out.stdout, command


def test_cli_bench_records_out_of_memory_as_a_data_point(monkeypatch, capsys):
    import torch

    from zoo import bench

    real = bench.timings_ms

    def oom_at_128(step, device, reps, warmup=1):
        if step.__closure__ and any(getattr(c.cell_contents, "shape", (0, 0))[1:2] == (128,) for c in step.__closure__):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(step, device, reps, warmup)

    monkeypatch.setattr(bench, "timings_ms", oom_at_128)
    rc = main(["bench", "--layers", "vanilla", "--lengths", "32", "128", "--reps", "1", "--d-model", "16",
               "--no-baseline"])
    out = capsys.readouterr().out
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("vanilla")}
    assert rc == 0 and "OOM" in rows["128"] and "OOM" not in rows["32"]


# ----------------------------------------------------------------------------- fast commands, lazy imports


@pytest.mark.parametrize("argv", [["list"], ["describe", "las"], ["info"]], ids=lambda a: a[0])
def test_layer_commands_do_not_import_the_training_stack(argv):
    """`zoo list / describe / info` need the registry, not the trainer: no timm, torchvision, dynamo."""
    code = (
        "import sys, contextlib, io\nfrom zoo.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    rc = main({argv!r})\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('timm', 'torchvision') "
        "or m.startswith(('zoo.train', 'torch._dynamo')))\n"
        "print(rc, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert out.stdout.strip() == "0 []", out.stdout[-500:] + out.stderr[-2000:]


def test_errors_of_modules_not_imported_are_still_one_line(capsys):
    """main() names the error classes of the modules a command loaded; a registry error stays one line."""
    assert main(["describe", "lass"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zoo describe: error: unknown layer 'lass'") and "\n" not in err


# ----------------------------------------------------------------------------- YAML syntax errors


@pytest.mark.parametrize("argv", [["train"], ["compare"], ["describe"]], ids=lambda a: a[0])
def test_yaml_syntax_error_is_one_line_with_file_line_column(argv, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("layer:\n  name: las\n  n_heads: [4\nmodel: {}\n")
    assert main([*argv, str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"zoo {argv[0]}: error: {bad}:4:6: YAML syntax error:"), err
    assert "line 3, column 12" in err  # where the unclosed bracket was opened


def test_yaml_syntax_error_in_a_task_config_found_by_name(tmp_path, monkeypatch, capsys):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "listops.yaml").write_text("name: listops\noptions: {max_len: 3\n")
    monkeypatch.setenv("ZOO_CONFIG_PATH", str(tmp_path))
    assert main(["train", "listops_small"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{tmp_path / 'tasks' / 'listops.yaml'}:3:1: YAML syntax error" in err, err


def test_a_config_file_that_is_not_a_mapping_is_named(tmp_path, capsys):
    bad = tmp_path / "list.yaml"
    bad.write_text("- las\n- s4d\n")
    assert main(["describe", str(bad)]) == 2
    assert f"{bad}: a config file must be a mapping" in capsys.readouterr().err


# ----------------------------------------------------------------------------- silently accepted values


def test_config_path_env_pointing_nowhere_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_CONFIG_PATH", str(tmp_path / "no_such_folder"))
    assert main(["describe", "las"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"ZOO_CONFIG_PATH: {tmp_path / 'no_such_folder'} is not a folder" in err, err


@pytest.mark.parametrize("override,key", [("alpha_max=2", "alpha_max must lie in (0, 1)"),
                                          ("alpha_min=0", "alpha_min must lie in (0, alpha_max=0.5]"),
                                          ("global_heads=9", "global_heads must be in [0, n_heads=8]")])
def test_layer_field_out_of_its_range_is_named(override, key, capsys):
    assert main(["describe", "las", override]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and key in err, err
    assert main(["describe", "vanilla", override]) == 2  # named even where decay is off
    capsys.readouterr()


def test_chunk_longer_than_the_task_is_named():
    """las_chunk with a chunk longer than the task still runs (it is global LaS), so one warning line names the key."""
    with pytest.warns(UserWarning, match=r"layer.chunk_size=512 is larger than the sequence length 256.*"
                                         r"layer.chunk_size to at most 256") as record:
        resolve_layer("las_chunk", ["chunk_size=512"], d_model=32, max_len=256)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_layer("las_chunk", ["chunk_size=256"], d_model=32, max_len=256).config.chunk_size == 256
        ok = resolve_layer("las_chunk", ["chunk_size=512"], d_model=32)  # length unknown: nothing to check
    with pytest.warns(UserWarning, match="chunk_size=512"):
        resolve_layer(ok, d_model=32, max_len=100)  # a resolved layer meets the task's length


def test_chunk_longer_than_the_task_is_one_line_through_zoo_train(tmp_path):
    argv = ["train", "listops_small", "layer=las_chunk", "layer.chunk_size=512", "data.generate_if_missing=false",
            "--data-root", str(tmp_path / "nothing"), "--out", str(tmp_path / "runs")]
    out = subprocess.run([sys.executable, "-m", "zoo", *argv], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert out.returncode == 2  # no data here: the run stops after the config is read
    lines = out.stderr.strip().splitlines()
    assert lines[0] == ("zoo: warning: layer.chunk_size=512 is larger than the sequence length 256 (the task's "
                        "max_len), so every sequence is one chunk; set layer.chunk_size to at most 256 (0 = global "
                        "attention)"), lines
    assert len(lines) == 2 and lines[1].startswith("zoo train: error: data root")


def test_pos_emb_auto_gives_attention_learned_positions_and_ssm_none():
    from zoo.models.encoder import Encoder, ModelConfig
    from zoo.train.experiment import load_experiment

    exp = load_experiment("listops_small", ["layer=vanilla"])
    assert exp.cfg.model.pos_emb == "auto"
    enc = Encoder(ModelConfig(**exp.cfg.model), exp.layer, vocab_size=20, max_len=256)
    assert enc.pos_emb == "learned" and enc.pos is not None and enc.pos.requires_grad
    exp = load_experiment("listops_small", [])  # s4d: position-aware by itself
    enc = Encoder(ModelConfig(**exp.cfg.model), exp.layer, vocab_size=20, max_len=256)
    assert enc.pos_emb == "none" and enc.pos is None
    enc = Encoder(ModelConfig(d_model=32, pos_emb="sinusoidal"), resolve_layer("s4d", d_model=32, max_len=64),
                  vocab_size=20, max_len=64)
    assert enc.pos_emb == "sinusoidal"  # an explicit choice is kept


def test_pos_emb_none_with_a_layer_that_needs_positions_warns_in_one_line():
    from zoo.models.encoder import Encoder, ModelConfig

    with pytest.warns(UserWarning) as record:
        enc = Encoder(ModelConfig(d_model=32, pos_emb="none"), resolve_layer("las", d_model=32, max_len=64),
                      vocab_size=20, max_len=64)
    assert enc.pos is None and len(record) == 1
    msg = str(record[0].message)
    assert "\n" not in msg and "model.pos_emb=none" in msg and "'las'" in msg and "model.pos_emb=auto" in msg


@pytest.mark.parametrize("path", ["comparisons/listops_small.yaml", "comparisons/listops_paper.yaml"])
def test_comparisons_need_no_per_layer_pos_emb(path):
    layers = OmegaConf.to_container(OmegaConf.load(CONFIGS.parent / path))["layers"]
    overrides = [o for entry in layers if isinstance(entry, dict) for o in entry.get("overrides", [])]
    assert overrides and not [o for o in overrides if "pos_emb" in o]  # model.pos_emb=auto lets each layer decide


# ----------------------------------------------------------------------------- small: data CLI labels and bars

GEN = ["data", "generate", "listops", "--n-train", "40", "--n-val", "10", "--n-test", "10", "--max-depth", "3",
       "--min-length", "5", "--max-length", "100"]


def test_generate_writes_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path):
    out = subprocess.run([sys.executable, "-m", "zoo", *GEN, "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert out.returncode == 0 and out.stderr == "", out.stderr[-1000:]
    assert "wrote" in out.stdout and (tmp_path / "listops-1000" / "basic_train.tsv").is_file()


def test_show_labels_generated_files_generated(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_DATA_CACHE", str(tmp_path / "cache"))
    assert main([*GEN, "--out", str(tmp_path / "data"), "--no-progress"]) == 0
    assert main(["data", "show", "listops", "--root", str(tmp_path / "data"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip().startswith(("train ", "val ", "test "))]
    assert len(rows) == 3 and all(r.endswith(f"generated basic_{r.split()[0]}.tsv") for r in rows), out
    assert "official" not in out
    (tmp_path / "data" / "listops-1000" / "generator.json").unlink()  # now it looks like the official release
    assert main(["data", "show", "listops", "--root", str(tmp_path / "data"), "--no-progress"]) == 0
    assert "official basic_train.tsv" in capsys.readouterr().out


def test_a_closed_pipe_is_no_traceback():
    """`zoo describe las | head -1`: the reader left; exit 141 (SIGPIPE's code), nothing on stderr. Here stdout
    is a pipe whose reader is already closed, so every write fails (deterministically)."""
    code = ("import os, sys\nr, w = os.pipe()\nos.close(r)\nos.dup2(w, 1)\n"
            "from zoo.cli import main\nsys.exit(main(['describe', 'las']))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert out.returncode == 141 and out.stderr == "", out.stderr[-1500:]
