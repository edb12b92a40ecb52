"""The built-in character LM: corpus split, training below the unigram baseline on a
small model, checkpoints, sampling with one compiled forward, the CLI."""
from __future__ import annotations

import numpy as np
import pytest

from graphc.cli import main
from graphc.ir import GraphcError
from graphc.lm import LMConfig, load_corpus
from graphc.lm.corpus import Corpus, unigram_nats
from graphc.lm.sample import Sampler, load, save
from graphc.lm.train import TrainConfig, train, windows

TEXT = ("the quick brown fox jumps over the lazy dog; " * 5
        + "def f(x):\n    return x * 2\n" * 3) * 30


def test_default_corpus_split_by_position():
    c = load_corpus()
    assert c.name == "pydoc_data.topics" and len(c.vocab) > 90
    n = len(c.train) + len(c.val) + len(c.test)
    assert n == len(c.text) and abs(len(c.train) / n - 0.9) < 1e-3
    assert c.decode(c.test[:50]) == c.text[len(c.train) + len(c.val):][:50]
    assert 3.0 < unigram_nats(c.train, c.test, len(c.vocab)) < 3.4


def test_windows_cover_the_split_without_overlap():
    ids = np.arange(100, dtype=np.int32)
    x, y = windows(ids, 8)
    assert x.shape == (12, 8) and np.array_equal(y, x + 1) and x[1, 0] == 8


def test_small_model_beats_unigram_checkpoint_and_sample(tmp_path):
    c = Corpus(TEXT, "test")
    cfg = LMConfig(vocab=len(c.vocab), context=16, dim=32, heads=2, layers=1, hidden=64)
    model, params, res = train(c, cfg, TrainConfig(steps=120, batch=8, lr=1e-2,
                                                   eval_every=60), log=lambda s: None)
    assert res.test < 0.6 * res.unigram, (res.test, res.unigram)
    save(str(tmp_path), params, cfg, c.vocab, {"test": res.test})
    m2, p2, vocab, meta = load(str(tmp_path))
    assert vocab == "".join(c.vocab) and meta["test"] == res.test
    s = Sampler(m2, p2, vocab)
    a = s.generate("the ", 40, temperature=0.5, top_k=5, seed=1)
    assert len(a) == 40 and set(a) <= set(vocab)
    assert s.generate("the ", 40, temperature=0.5, top_k=5, seed=1) == a   # seeded
    assert len(s.forward.cache) == 1 and s.calls == 80      # one compile for every token
    with pytest.raises(GraphcError, match="not in the model's vocabulary"):
        s.generate("\u2603", 3)


def test_cli_train_and_sample(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    ck = tmp_path / "ck"
    assert main(["train", "transformer", "--text", str(text), "--steps", "20",
                 "--checkpoint-dir", str(ck), "--batch-size", "4"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("test loss ") and out[-1].endswith(" nats/char")
    assert any("unigram baseline" in line for line in out)
    assert main(["sample", "transformer", "--checkpoint", str(ck), "--prompt", "def ",
                 "--tokens", "30", "--top-k", "5"]) == 0
    assert capsys.readouterr().out.startswith("def ")
    assert main(["sample", "transformer", "--checkpoint", str(tmp_path / "none")]) == 1
