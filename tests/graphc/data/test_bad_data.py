"""Bad datasets are one clear GraphcError naming the file or option (issue 15, item 5)."""
from __future__ import annotations

import numpy as np
import pytest

from graphc import GraphcError, data


def test_non_utf8_csv(tmp_path):
    f = tmp_path / "latin1.csv"
    f.write_bytes("temp\u00e9rature,y\n1.5,0\n2.5,1\n".encode("latin-1"))
    with pytest.raises(GraphcError, match=r"latin1.csv.*UTF-8.*byte 0xe9 at offset 4"):
        data.load_csv(str(f))


def test_utf8_csv_with_a_byte_order_mark(tmp_path):
    f = tmp_path / "bom.csv"
    f.write_bytes("\ufeffa,y\n1.5,0\n2.5,1\n".encode("utf-8"))
    ds = data.load_csv(str(f))
    assert ds.feature_names == ["a"] and len(ds) == 2


@pytest.mark.parametrize("spec", ["synth-reg:n=-5", "synth-reg:n=0", "synth-reg:d=-1",
                                  "synth-reg:noise=-1", "synth-reg:noise=nan",
                                  "synth-cls:n=-5", "synth-cls:d=0", "synth-reg:n=1e13",
                                  "synth-cls:n=10,classes=-2"])
def test_bad_synthetic_options(spec):
    with pytest.raises(GraphcError, match=spec.split(":")[1].split(",")[-1].split("=")[0]):
        data.load_dataset(spec)


def test_label_values_are_not_a_class_count():
    """Labels 0 and 1e9 would make a 1e9-class model (37 GiB of weights): refused."""
    ds = data.Dataset(np.ones((4, 2)), np.array([0, 1e9, 0, 1e9]), "sparse")
    with pytest.raises(GraphcError, match=r"label 1000000000 at row 1.*classes.*0..K-1"):
        ds.for_task("classification").n_classes
    ok = data.Dataset(np.ones((4, 2)), np.array([0, 3, 1, 2]), "dense")
    assert ok.for_task("classification").n_classes == 4
