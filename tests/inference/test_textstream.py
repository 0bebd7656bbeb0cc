"""TextAssembler: stop strings across token boundaries, held-back text, split UTF-8 characters."""

from starchat.inference.textstream import TextAssembler


def _piece_decoder(pieces: dict[int, bytes]):
    return lambda ids: b"".join(pieces[i] for i in ids).decode("utf-8", errors="replace")


def _run(pieces: list[bytes], stop=()):
    table = dict(enumerate(pieces))
    asm = TextAssembler(_piece_decoder(table), stop)
    deltas = []
    for i in range(len(pieces)):
        deltas.append(asm.feed(i))
        if asm.stopped:
            break
    deltas.append(asm.finish())
    return asm, deltas


def test_stop_string_split_over_four_tokens_is_found_and_cut():
    asm, deltas = _run([b"Hello", b" wor", b"ld", b"<", b"|st", b"op", b"|>", b" more"], stop=["<|stop|>"])
    assert asm.stopped
    assert asm.text == "Hello world"
    assert "".join(deltas) == "Hello world"


def test_possible_stop_prefix_is_held_back_then_released():
    asm, deltas = _run([b"a", b"<", b"|", b"x"], stop=["<|stop|>"])
    assert not asm.stopped
    assert deltas[1:3] == ["", ""]  # "<" and "<|" might start the stop string
    assert deltas[3] == "<|x" and asm.text == "a<|x"


def test_split_utf8_character_is_never_emitted_half():
    e_acute = "é".encode()
    asm, deltas = _run([b"caf", e_acute[:1], e_acute[1:], b"!"])
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == asm.text == "café!"


def test_earliest_of_several_stop_strings_wins():
    asm, _ = _run([b"x = 1\n", b"```", b"\n\nEND"], stop=["END", "```"])
    assert asm.text == "x = 1\n"
