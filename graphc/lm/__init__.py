"""graphc.lm -- the built-in character language model (``graphc train transformer``):
the corpus and its split (corpus.py), the decoder-only transformer (model.py), training
and evaluation in nats per character (train.py), checkpoints and sampling (sample.py)."""
from .corpus import Corpus, load_corpus
from .model import CharTransformer, LMConfig
