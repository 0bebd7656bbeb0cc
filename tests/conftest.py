"""Shared fixtures: offline mode, a tiny byte-level BPE tokenizer and a tiny GPT-BigCode model."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from fimkit import tiny_gpt_bigcode  # noqa: E402

DATA = Path(__file__).parent / "data"
SAMPLES = DATA / "samples"


def _corpus() -> list[str]:
    texts = []
    for p in sorted(SAMPLES.rglob("*")):
        if p.is_file():
            texts.append(p.read_text(encoding="utf-8"))
    texts.append("def add(a, b):\n    return a + b\n\nHow do I sort a list in Python? Use sorted(xs).\n")
    return texts


@pytest.fixture(scope="session")
def base_tokenizer_dir(tmp_path_factory) -> Path:
    """A byte-level BPE (~600 tokens) trained on the bundled samples, saved as a HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    out = tmp_path_factory.mktemp("tok")
    hf.save_pretrained(out)
    return out


@pytest.fixture
def base_tokenizer(base_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_tokenizer_dir)


@pytest.fixture
def tokenizer(base_tokenizer):
    from starchat.templates import prepare_tokenizer

    return prepare_tokenizer(base_tokenizer)


@pytest.fixture(scope="session")
def tiny_model_dir(base_tokenizer_dir, tmp_path_factory) -> Path:
    """A randomly initialised 2-layer GPT-BigCode with the StarChat tokens, saved with its tokenizer."""
    from transformers import AutoTokenizer

    from starchat.templates import prepare_tokenizer

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(base_tokenizer_dir))
    model = tiny_gpt_bigcode(tok, seed=0)
    out = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def make_plain_base(base_tokenizer_dir, tmp_path_factory):
    """A function (n_embd, seed) -> a tiny GPT-BigCode on the base tokenizer only: no dialogue tokens yet,
    so training (and eval loss) must resize it."""
    from transformers import AutoTokenizer

    def make(n_embd: int, seed: int):
        # the base tokenizer has no pad token, so the config's pad_token_id stays None
        tok = AutoTokenizer.from_pretrained(base_tokenizer_dir)
        model = tiny_gpt_bigcode(tok, seed=seed, n_positions=256, n_embd=n_embd)
        out = tmp_path_factory.mktemp(f"plain-base-{n_embd}")
        model.save_pretrained(out)
        tok.save_pretrained(out)
        return out

    return make


@pytest.fixture(scope="session")
def plain_base_dir(make_plain_base):
    return make_plain_base(32, seed=1)
