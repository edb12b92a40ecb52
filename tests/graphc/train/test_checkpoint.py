"""Checkpoints: atomic writes, last two kept, corrupt/mismatched files refused with the
previous one intact, and resume (from epoch or mid-epoch checkpoints) bit-identical."""
import glob
import os

import numpy as np
import pytest

from graphc.train import CheckpointError, Trainer, list_checkpoints, prepare, resolve
from graphc.train import checkpoint as ckpt
from graphc.train.progress import Progress

FAST = dict(dataset="synth-cls:n=400,d=8,classes=3", widths=(16,), batch_size=32,
            backend="numpy", progress="none", patience=0)


def trainer(tmp_path, name="run", **kw):
    spec, cfg = resolve("mlp", **{**FAST, "checkpoint_dir": str(tmp_path / name), **kw})
    return Trainer(prepare(spec, cfg), Progress("none"))


def final_arrays(directory):
    arrays, meta = ckpt.load(list_checkpoints(directory)[-1])
    return arrays, meta


def assert_same_arrays(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_save_is_atomic_and_keeps_the_last_two(tmp_path, monkeypatch):
    d = str(tmp_path)
    for s in range(1, 5):
        ckpt.save(d, s, s * 10, {"param/w": np.full(3, s, np.float32)}, {"epoch": s})
    assert [os.path.basename(p) for p in list_checkpoints(d)] == [
        "ckpt-e00003-s00000030.npz", "ckpt-e00004-s00000040.npz"]

    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError):
        ckpt.save(d, 5, 50, {"param/w": np.zeros(3, np.float32)}, {})
    assert len(list_checkpoints(d)) == 2 and not glob.glob(os.path.join(d, ".ckpt-*"))
    arrays, meta = ckpt.load(list_checkpoints(d)[-1])
    assert arrays["param/w"].tolist() == [4, 4, 4] and meta["epoch"] == 4


def test_truncated_or_garbage_checkpoint_is_refused_and_previous_kept(tmp_path):
    t = trainer(tmp_path, epochs=3)
    t.run()
    files = list_checkpoints(str(tmp_path / "run"))
    assert len(files) == 2
    good = open(files[0], "rb").read()
    data = open(files[-1], "rb").read()
    open(files[-1], "wb").write(data[: len(data) // 2])           # truncated
    t2 = trainer(tmp_path, epochs=3, resume=True)
    with pytest.raises(CheckpointError, match=r"corrupt or truncated.*previous checkpoint"):
        t2.run()
    assert open(files[0], "rb").read() == good                     # untouched
    open(files[-1], "wb").write(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        trainer(tmp_path, epochs=3, resume=True).run()
    # a flipped byte inside a member fails the zip CRC check
    flipped = bytearray(good)
    flipped[len(flipped) // 3] ^= 0xFF
    open(files[-1], "wb").write(bytes(flipped))
    with pytest.raises(CheckpointError):
        trainer(tmp_path, epochs=3, resume=True).run()
    # the previous checkpoint still resumes
    trainer(tmp_path, epochs=3, resume=files[0]).run()


def test_checkpoint_from_another_configuration_is_refused(tmp_path):
    trainer(tmp_path, epochs=2).run()
    with pytest.raises(CheckpointError, match="different run configuration.*lr"):
        trainer(tmp_path, epochs=2, lr=0.5, resume=True).run()
    with pytest.raises(CheckpointError, match="different run configuration.*widths"):
        trainer(tmp_path, epochs=2, widths=(8,), resume=True).run()
    path = list_checkpoints(str(tmp_path / "run"))[-1]
    arrays, meta = ckpt.load(path)
    arrays["param/0.w"] = arrays["param/0.w"][:, :3]
    ckpt.save(str(tmp_path / "other"), 9, 999, arrays, meta)
    with pytest.raises(CheckpointError, match="0.w is float32.*the model has"):
        trainer(tmp_path, epochs=2, resume=list_checkpoints(str(tmp_path / "other"))[-1]).run()


@pytest.mark.parametrize("split_kw", [dict(), dict(checkpoint_steps=7),
                                      dict(checkpoint_steps=7, backend="llvm", threads=2)])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, split_kw):
    ref = trainer(tmp_path, "ref", epochs=4, **split_kw).run()
    ref_arrays, _ = final_arrays(str(tmp_path / "ref"))
    # "interrupt" after 2 epochs (or at a mid-epoch checkpoint), then resume to 4
    first = trainer(tmp_path, "part", epochs=2, **split_kw)
    first.run()
    if split_kw:                       # drop the epoch-end checkpoint: resume mid-epoch
        last = list_checkpoints(str(tmp_path / "part"))
        os.unlink(last[-1])
        _, meta = final_arrays(str(tmp_path / "part"))
        assert meta["batch"] > 0
    res = trainer(tmp_path, "part", epochs=4, resume=True, **split_kw).run()
    arrays, meta = final_arrays(str(tmp_path / "part"))
    assert_same_arrays(ref_arrays, arrays)
    assert meta["epoch"] == 4 and res.test["test_loss"] == ref.test["test_loss"]
    assert [h["train_loss"] for h in res.history] == [h["train_loss"] for h in ref.history]


def test_early_stopping_reports_why_and_keeps_best_parameters(tmp_path):
    t = trainer(tmp_path, epochs=200, patience=2, tol=10.0)   # nothing improves by 10
    res = t.run()
    assert "early stop" in res.stop_reason and len(res.history) == 3
    assert res.best_epoch == 1
    res2 = trainer(tmp_path, "b", epochs=3, patience=0).run()
    assert res2.stop_reason == "reached the maximum of 3 epochs"
