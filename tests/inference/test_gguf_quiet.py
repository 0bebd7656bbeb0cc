"""The GGUF export says what llama.cpp's fallback-quantization count means for the file, instead of the count."""

from __future__ import annotations


def test_gguf_fallback_count_is_said_as_what_it_means(tiny_model_dir, tmp_path, capfd, caplog):
    from starchat.export.gguf import export_gguf

    with caplog.at_level("WARNING", logger="starchat.export.gguf"):
        export_gguf(tiny_model_dir, tmp_path / "tiny.gguf", "q4_k_m")
    assert "required fallback quantization" not in capfd.readouterr().err
    note = next(r.getMessage() for r in caplog.records if "fallback" in r.getMessage() or "note:" in r.getMessage())
    assert note.startswith("note: ") and "tensors could not use q4_k_m's k-quant blocks" in note
    assert "quality as good or better" in note
