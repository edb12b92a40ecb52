"""graphc.data: bundled and synthetic sets, user files, splits, standardisation, batches."""
import json

import numpy as np
import pytest

from graphc import GraphcError
from graphc import data as D


def test_bundled_datasets_load_offline():
    d = D.load_dataset("digits")
    assert d.X.shape == (1797, 64) and d.n_classes == 10 and d.X.dtype == np.float32
    assert D.load_dataset("diabetes").task == "regression"
    bc = D.load_dataset("breast_cancer")
    assert bc.X.shape == (569, 30) and set(np.unique(bc.y)) == {0, 1}


def test_synthetic_generators_are_seeded_and_sized():
    a = D.load_dataset("synth-cls:n=300,d=7,classes=4,seed=3")
    b = D.synthetic_classification(n=300, d=7, classes=4, seed=3)
    assert a.X.shape == (300, 7) and a.n_classes == 4
    np.testing.assert_array_equal(a.X, b.X)
    r = D.load_dataset("synth-reg:n=50,d=2,noise=0.5")
    assert r.X.shape == (50, 2) and r.task == "regression"
    with pytest.raises(GraphcError, match="unknown dataset"):
        D.load_dataset("mnist-from-the-internet")


def test_split_is_seeded_disjoint_and_stratified():
    d = D.load_dataset("digits")
    s1, s2, s3 = D.split(d, seed=0), D.split(d, seed=0), D.split(d, seed=1)
    np.testing.assert_array_equal(s1.train.X, s2.train.X)
    assert not np.array_equal(s1.train.X, s3.train.X)
    assert len(s1.train) + len(s1.val) + len(s1.test) == len(d)
    rows = lambda ds: {r.tobytes() for r in ds.X}          # noqa: E731
    # digits has a few duplicated images; the splits are disjoint as index sets
    assert len(rows(s1.train) & rows(s1.test)) < 5
    for part in (s1.val, s1.test):                          # every class in every part
        assert set(np.unique(part.y)) == set(range(10))


def test_standardisation_uses_training_statistics_only():
    d = D.load_dataset("breast_cancer")
    s = D.split(d, seed=0)
    z, fx, _ = D.standardize(s)
    np.testing.assert_allclose(z.train.X.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.train.X.std(0), 1, atol=1e-4)
    np.testing.assert_allclose(fx.mean, s.train.X.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(z.test.X, (s.test.X - fx.mean) / fx.std, rtol=1e-4, atol=1e-5)
    assert np.abs(z.test.X.mean(0)).max() > 1e-3      # the test set was not re-centred
    const = D.Dataset(np.ones((10, 2)), np.arange(10) % 2, "c", "binary")
    assert np.isfinite(D.standardize(D.split(const, 0.2, 0.2))[0].train.X).all()


def test_batches_shuffle_each_epoch_drop_the_partial_batch_and_replay_from_state():
    X = np.arange(10, dtype=np.float32)[:, None]
    b = D.Batches(X, np.arange(10), 3, seed=5)
    assert b.per_epoch == 3
    state = b.rng_state()
    e1 = [yb.tolist() for _, yb in b.epoch()]
    e2 = [yb.tolist() for _, yb in b.epoch()]
    assert all(len(x) == 3 for x in e1) and len(e1) == 3 and e1 != e2
    assert len(set(sum(e1, []))) == 9                      # one sample dropped this epoch
    b.set_rng_state(state)
    assert [yb.tolist() for _, yb in b.epoch(start=1)] == e1[1:]
    json.loads(state)                                      # a JSON string, no pickle
    with pytest.raises(GraphcError, match="larger than"):
        D.Batches(X, np.arange(10), 11)


def test_csv_with_header_and_label_column(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,label\n1,2,0\n3,4,1\n5,6,1\n")
    d = D.load_dataset(str(p))
    assert d.X.tolist() == [[1, 2], [3, 4], [5, 6]] and d.y.tolist() == [0, 1, 1]
    d = D.load_csv(str(p), label_column="a")
    assert d.y.tolist() == [1, 3, 5] and d.feature_names == ["b", "label"]
    q = tmp_path / "n.csv"
    q.write_text("1,2,0\n3,4,1\n")
    assert D.load_csv(str(q)).X.shape == (2, 2)


def test_csv_non_numeric_cell_names_row_and_column(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("a,b,label\n1,2,0\n3,oops,1\n")
    with pytest.raises(GraphcError, match=r"row 3, column 2 \('b'\): 'oops' is not a number"):
        D.load_dataset(str(p))
    p.write_text("1,2,0\n3,4\n")
    with pytest.raises(GraphcError, match="row 2 has 2 columns, expected 3"):
        D.load_dataset(str(p))
    p.write_text("1,x,0\n")
    with pytest.raises(GraphcError, match="row 1, column 2"):
        D.load_dataset(str(p))


def test_npz_files(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((4, 3)), y=np.array([0, 1, 0, 1]))
    assert D.load_dataset(str(p)).X.shape == (4, 3)
    np.savez(p, features=np.zeros((4, 3)))
    with pytest.raises(GraphcError, match="expected arrays 'X' and 'y'"):
        D.load_dataset(str(p))
    p.write_bytes(b"not a zip")
    with pytest.raises(GraphcError, match="not a valid .npz"):
        D.load_dataset(str(p))
    with pytest.raises(GraphcError, match="does not exist"):
        D.load_dataset(str(tmp_path / "missing.npz"))


def test_label_checks_for_the_task():
    d = D.Dataset(np.zeros((4, 2)), np.array([0, 1, 2.5, 1]), "f")
    with pytest.raises(GraphcError, match=r"label 2.5 at row 2 is not an integer"):
        d.for_task("classification")
    assert d.for_task("regression").y.dtype == np.float32
    tri = D.Dataset(np.zeros((3, 2)), np.array([0, 1, 2]), "t")
    with pytest.raises(GraphcError, match="binary model needs labels 0/1"):
        tri.for_task("binary")
    pm = D.Dataset(np.zeros((2, 2)), np.array([-1, 1]), "pm").for_task("binary")
    assert pm.y.tolist() == [0, 1]
    neg = D.Dataset(np.zeros((2, 2)), np.array([-1, 3]), "n")
    with pytest.raises(GraphcError, match="out of range"):
        neg.for_task("classification")
    c = tri.for_task("classification")
    with pytest.raises(GraphcError, match="label 2 at row 2 is out of range for model m"):
        c.check_classes(2, "m")
    with pytest.raises(GraphcError, match="expects 5 input features but dataset t has 2"):
        c.check_features(5, "m")
    with pytest.raises(GraphcError, match="must be finite"):
        D.Dataset(np.array([[1.0, np.nan]]), np.array([0]), "nan")
