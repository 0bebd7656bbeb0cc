"""llama.cpp's "n_ctx_seq > n_ctx_train" is noise for the slot server (every request stays within the model's
context); it is filtered there and nowhere else, and other llama.cpp lines still show."""

from __future__ import annotations

from starchat import quiet


def test_llama_cpp_n_ctx_seq_warning_is_gone_from_serve_and_other_lines_stay(tiny_llama_engine, capfd, monkeypatch):
    from contextlib import nullcontext

    from starchat.server import llama_batcher

    trained = tiny_llama_engine.context_length
    llama_batcher.LlamaCppBatcher(tiny_llama_engine, slots=4, kv_tokens=4 * trained)
    assert "n_ctx_seq" not in capfd.readouterr().err
    with monkeypatch.context() as m:  # the same context without the filter: llama.cpp does print it
        m.setattr(llama_batcher, "llama_log_filter", lambda *p: nullcontext())
        llama_batcher.LlamaCppBatcher(tiny_llama_engine, slots=4, kv_tokens=4 * trained)
    assert f"n_ctx_seq ({4 * trained}) > n_ctx_train" in capfd.readouterr().err
    with quiet.llama_log_filter(r"n_ctx_seq \(\d+\) > n_ctx_train") as f:
        quiet._llama_log(quiet.GGML_WARN, b"llama_context: n_ctx_seq (99) > n_ctx_train (9) -- overflow\n", None)
        quiet._llama_log(quiet.GGML_WARN, b"llama_context: a real problem\n", None)
    assert "a real problem" in capfd.readouterr().err and len(f.seen) == 1
