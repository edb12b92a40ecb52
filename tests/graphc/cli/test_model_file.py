"""A trained model is usable: train --save -> predict on a CSV -> eval, as a user runs it,
plus gc.load_model, the file's contents, and every refusal (wrong file, wrong model,
wrong data, unwritable --save, a save that fails half-way)."""
import json
import os

import numpy as np
import pytest

import graphc as gc
from graphc.train import modelfile


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """graphc train mlp --save (default llvm backend), with its --json log."""
    from .conftest import run_graphc
    d = tmp_path_factory.mktemp("model")
    r = run_graphc("train", "mlp", "--widths", "32", "--epochs", "6", "--save", d / "m.npz",
                   "--json", d / "log.jsonl", cwd=d)
    assert r.returncode == 0, r.stderr
    assert "model saved to" in r.stdout
    test = [json.loads(x) for x in (d / "log.jsonl").read_text().splitlines()][-1]
    return d, d / "m.npz", test


def _digits_csv(path, n=40, label=True, header=False):
    from sklearn.datasets import load_digits
    dg = load_digits()
    X, y = dg.data[-n:], dg.target[-n:]
    cols = [X, y[:, None]] if label else [X]
    with open(path, "w") as f:
        if header:
            f.write(",".join([f"px{i}" for i in range(64)] + (["digit"] if label else [])) + "\n")
        np.savetxt(f, np.concatenate(cols, axis=1), delimiter=",", fmt="%g")
    return X, y


def test_file_holds_everything_without_pickle(trained):
    _, path, test = trained
    with np.load(path, allow_pickle=False) as z:
        files = set(z.files)
        rec = json.loads(str(z["graphc_model"]))
        assert z["x_mean"].shape == (64,) and z["x_std"].shape == (64,)
    assert {"params/0/w", "params/0/b", "params/2/w", "params/2/b"} <= files
    assert rec["model"]["name"] == "mlp" and rec["model"]["options"] == {"widths": [32]}
    assert rec["model"]["n_features"] == 64 and rec["model"]["n_classes"] == 10
    assert rec["classes"] == list(range(10))
    assert rec["metrics"]["test_accuracy"] == test["test_accuracy"]
    assert rec["config"]["optimizer"] == "adam" and len(rec["history"]) >= 1
    assert [f for f in os.listdir(path.parent) if f.endswith(".tmp")] == []


def test_train_save_predict_csv_eval(trained, graphc, tmp_path):
    d, path, test = trained
    X, y = _digits_csv(tmp_path / "new.csv", label=False)
    r = graphc("predict", path, tmp_path / "new.csv", "--out", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    assert "wrote 40 predictions" in r.stderr
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["prediction", "p_0", "p_1"] and len(rows) == 41
    pred = np.array([int(r.split(",")[0]) for r in rows[1:]])
    proba = np.array([[float(c) for c in r.split(",")[1:]] for r in rows[1:]])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-4)
    assert np.array_equal(pred, proba.argmax(axis=1))
    assert np.mean(pred == y) > 0.6                 # a trained model, not noise
    m = gc.load_model(path)                          # the same model from Python
    for _ in range(3):                               # compiled forward, called repeatedly
        assert np.array_equal(m.predict(X), pred)
    # stdout, a CSV with a header and the label column (ignored with a note)
    _digits_csv(tmp_path / "lab.csv", label=True, header=True)
    r = graphc("predict", path, tmp_path / "lab.csv")
    assert r.returncode == 0, r.stderr
    assert "ignored label column 'digit'" in r.stderr
    assert [int(x.split(",")[0]) for x in r.stdout.splitlines()[1:]] == pred.tolist()
    # eval on the run's own test split reproduces the saved test figures exactly
    r = graphc("eval", path, "--json", tmp_path / "e.json")
    assert r.returncode == 0, r.stderr
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["eval_correct"] == test["test_correct"] and ev["eval_n"] == test["test_n"]
    assert ev["eval_loss"] == pytest.approx(test["test_loss"], rel=1e-5)
    assert "eval accuracy" in r.stdout.splitlines()[-1]
    # eval on a labelled CSV agrees with the predictions
    r = graphc("eval", path, "--dataset", tmp_path / "lab.csv", "--label-column", "digit",
               "--json", tmp_path / "e2.json")
    assert r.returncode == 0, r.stderr
    ev2 = json.loads((tmp_path / "e2.json").read_text())
    assert ev2["eval_correct"] == int(np.sum(pred == y)) and ev2["eval_n"] == 40


def test_regression_model_predicts_in_target_units(graphc, tmp_path):
    r = graphc("train", "linreg", "--epochs", "30", "--backend", "numpy", "--save",
               tmp_path / "lr.npz", "--json", tmp_path / "log.jsonl")
    assert r.returncode == 0, r.stderr
    test = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    from sklearn.datasets import load_diabetes
    dd = load_diabetes(scaled=False)
    np.savez(tmp_path / "new.npz", X=dd.data[:100])
    r = graphc("predict", tmp_path / "lr.npz", tmp_path / "new.npz", "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "prediction"
    pred = np.array([float(x) for x in lines[1:]])
    assert 50 < pred.mean() < 250                    # disease progression units, not z-scores
    assert np.corrcoef(pred, dd.target[:100])[0, 1] > 0.5
    m = gc.load_model(tmp_path / "lr.npz", backend="numpy")
    np.testing.assert_allclose(m(dd.data[:100]), pred, rtol=1e-6)
    r = graphc("eval", tmp_path / "lr.npz", "--backend", "numpy", "--json", tmp_path / "e.json")
    assert r.returncode == 0, r.stderr
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["eval_r2"] == pytest.approx(test["test_r2"], rel=1e-6)


def test_refuses_files_from_elsewhere(trained, graphc, tmp_path):
    d, path, _ = trained
    # a checkpoint is not a model, a model is not a checkpoint, data is not a model
    r = graphc("train", "logreg", "--epochs", "1", "--backend", "numpy", "--checkpoint-dir",
               tmp_path / "ck")
    assert r.returncode == 0, r.stderr
    (ck,) = sorted((tmp_path / "ck").glob("ckpt-*.npz"))
    r = graphc("predict", ck, tmp_path / "x.csv")
    assert r.returncode == 1 and "is a training checkpoint, not a saved model" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = graphc("train", "mlp", "--widths", "32", "--epochs", "1", "--resume", path)
    assert r.returncode == 1 and "is a saved model" in r.stderr and "Traceback" not in r.stderr
    np.savez(tmp_path / "data.npz", X=np.zeros((3, 64)), y=np.zeros(3))
    r = graphc("eval", tmp_path / "data.npz")
    assert r.returncode == 1 and "is not a graphc model file" in r.stderr
    # data of another shape
    r = graphc("eval", path, "--dataset", "breast_cancer")
    assert r.returncode == 1 and "expects 64 input features" in r.stderr
    np.savez(tmp_path / "narrow.npz", X=np.zeros((3, 30)))
    r = graphc("predict", path, tmp_path / "narrow.npz")
    assert r.returncode == 1 and "expects 64 features" in r.stderr
    # a file whose parameters do not fit the model its record names
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    rec = json.loads(str(arrays["graphc_model"]))
    rec["model"]["options"]["widths"] = [48]
    arrays["graphc_model"] = np.array(json.dumps(rec))
    np.savez(tmp_path / "other.npz", **arrays)
    r = graphc("predict", tmp_path / "other.npz", tmp_path / "narrow.npz")
    assert r.returncode == 1 and "params/0/b is float32[32]" in r.stderr
    assert "another model" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_save_path_checked_before_training(graphc, tmp_path):
    for bad, msg in ((tmp_path / "missing" / "m.npz", "does not exist"),
                     (tmp_path, "must end in .npz"),
                     (tmp_path / "m.pkl", "must end in .npz")):
        r = graphc("train", "logreg", "--backend", "numpy", "--save", bad)
        assert r.returncode == 1 and msg in r.stderr, r.stderr
        assert "epoch" not in r.stdout                 # refused before any training
    os.mkdir(tmp_path / "dir.npz")
    r = graphc("train", "logreg", "--backend", "numpy", "--save", tmp_path / "dir.npz")
    assert r.returncode == 1 and "is a directory" in r.stderr


def test_failing_save_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    from graphc.cli import main
    target = tmp_path / "m.npz"
    target.write_bytes(b"the previous model")
    real = np.savez

    def disk_full(f, **arrays):
        real(f, **{k: v for k, v in list(arrays.items())[:1]})    # a partial write ...
        raise OSError(28, "No space left on device")             # ... then ENOSPC

    monkeypatch.setattr(np, "savez", disk_full)
    rc = main(["train", "logreg", "--epochs", "1", "--backend", "numpy", "--progress", "none",
               "--save", str(target)])
    assert rc == 1
    assert "No space left on device" in capsys.readouterr().err
    assert target.read_bytes() == b"the previous model"
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]
    monkeypatch.setattr(np, "savez", real)
    assert main(["train", "logreg", "--epochs", "1", "--backend", "numpy", "--progress",
                 "none", "--save", str(target)]) == 0
    assert gc.load_model(target, backend="numpy").predict(np.zeros(64)).shape == (1,)
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]


def test_tree_roundtrip_and_keys():
    tree = {"enc": [{"w": 1, "b": 2}, {"w": 3}], "head": (4, None), "z": 5}
    from graphc import pytree
    leaves, td = pytree.flatten(tree)
    assert modelfile.tree_from_json(json.loads(json.dumps(modelfile.tree_to_json(td)))) == td
    assert modelfile.leaf_keys(td) == ["params/enc/0/b", "params/enc/0/w", "params/enc/1/w",
                                       "params/head/0", "params/z"]


# ---- training control through the CLI --------------------------------------------------------
def _records(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_cli_schedule_changes_lr_without_recompiling(graphc, tmp_path):
    from graphc.schedules import cosine, warmup
    log = tmp_path / "log.jsonl"
    r = graphc("train", "logreg", "--epochs", "4", "--patience", "0", "--lr-schedule", "cosine",
               "--warmup", "20", "--min-lr", "0.001", "--clip-grad-norm", "5",
               "--optimizer", "adamw", "--json", log, "--checkpoint-dir", tmp_path / "ck")
    assert r.returncode == 0, r.stderr
    assert "cosine, warm-up 20 updates" in r.stdout and "grad-norm clip 5" in r.stdout
    recs = _records(log)
    config, epochs, test = recs[0], recs[1:-1], recs[-1]
    assert config["event"] == "config" and config["lr_schedule"] == "cosine"
    assert config["clip_grad_norm"] == 5 and config["optimizer"] == "adamw"
    per = config["steps_per_epoch"]
    sched = warmup(cosine(0.01, 4 * per - 20, 0.001), 20)
    lrs = [e["lr"] for e in epochs]
    assert lrs == pytest.approx([sched(e * per - 1) for e in range(1, 5)], rel=1e-6)
    assert len(set(lrs)) == 4                     # the lr moved every epoch ...
    assert test["step_compiles"] == 1             # ... with one compiled step
    from graphc.train import checkpoint as ckpt
    _, meta = ckpt.load(ckpt.list_checkpoints(str(tmp_path / "ck"))[-1])
    assert meta["config"]["lr_schedule"] == "cosine" and meta["config"]["warmup"] == 20
    assert meta["settings"]["schedule"]["kind"] == "warmup"
    # resuming with another schedule is another run: refused in one line
    r = graphc("train", "logreg", "--epochs", "6", "--patience", "0", "--lr-schedule", "step",
               "--lr-step", "1", "--optimizer", "adamw", "--clip-grad-norm", "5",
               "--checkpoint-dir", tmp_path / "ck", "--resume")
    assert r.returncode == 1 and "lr_schedule: checkpoint 'cosine' vs now 'step'" in r.stderr


def test_cli_optimizer_flags(graphc, tmp_path):
    log = tmp_path / "log.jsonl"
    r = graphc("train", "logreg", "--epochs", "2", "--patience", "0", "--optimizer", "momentum",
               "--nesterov", "--weight-decay", "0.001", "--lr-schedule", "step", "--lr-step",
               "1", "--lr-gamma", "0.5", "--val-fraction", "0.2", "--test-fraction", "0.1",
               "--memory-budget", "0.5", "--json", log, "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    config, e1, e2, test = _records(log)
    assert config["nesterov"] is True and config["memory_budget"] == 0.5
    assert "nesterov=True" in config["optimizer_rule"]
    assert e1["lr"] == pytest.approx(0.01) and e2["lr"] == pytest.approx(0.005)
    assert test["test_n"] == 179                  # ~10 % of 1,797 digits, stratified
    for bad, msg in ((["--nesterov"], "--nesterov needs --optimizer momentum"),
                     (["--lr-schedule", "step"], "needs --lr-step"),
                     (["--clip-grad-norm", "-1"], "expected a positive number"),
                     (["--val-fraction", "1.5"], "expected a fraction")):
        r = graphc("train", "logreg", *bad)
        assert r.returncode in (1, 2) and msg in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
