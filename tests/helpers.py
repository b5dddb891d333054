"""Helpers the tests share (no test module imports another): the CLI run in-process, its one-line error, and
a recorder of block inputs and outputs with the Δ step computed by hand."""

from __future__ import annotations

import torch


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Runs ``autodelta`` in this process: its exit code, stdout and stderr (what was printed before is dropped)."""
    from autodelta.cli.app import main

    capsys.readouterr()
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [line.split("\r")[-1] for line in err.strip().splitlines()]  # what a terminal shows: erased bars go
    assert len(lines) == 1 and lines[0].startswith("autodelta: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]


def refusal(cli, *argv: str) -> str:
    """The one line a refused command prints (exit 2, no traceback), through the ``cli`` fixture."""
    code, _, err = cli(*argv)
    assert_one_line_error(code, err)
    return err


class Recorder:
    """Block inputs/outputs of an unpatched model, by call."""

    def __init__(self, blocks):
        self.inputs, self.outputs, self.kwargs = [], [], []
        self.handles = []
        for k, block in enumerate(blocks):
            self.handles.append(block.register_forward_pre_hook(self._pre(k), with_kwargs=True))
            self.handles.append(block.register_forward_hook(self._post(k)))

    def _pre(self, k):
        def hook(mod, args, kwargs):
            self.inputs.append(args[0] if args else kwargs["hidden_states"])
            self.kwargs.append(dict(kwargs))
        return hook

    def _post(self, k):
        def hook(mod, args, out):
            self.outputs.append(out)
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def delta_step_by_hand(blocks, h, kwargs, s, n, delta):
    """The last hidden state of a Δ step over ``[s, s+n)`` with offset ``delta``, block by block."""
    with torch.no_grad():
        for k in range(s):
            h = blocks[k](h, **kwargs)
        h = h + delta
        for k in range(s + n, len(blocks)):
            h = blocks[k](h, **kwargs)
    return h
