"""House rules that a linter cannot see: only arch.py names model submodules."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "lm_interp_plugin"

# Module names of the supported families (see arch.py's table), as attribute access or a string literal.
SUBMODULE_NAMES = (
    "q_proj k_proj v_proj o_proj qkv_proj gate_proj up_proj down_proj gate_up_proj c_attn c_proj c_fc "
    "query_key_value dense_h_to_4h dense_4h_to_h self_attn mlp embed_tokens embed_in embed_out lm_head "
    "wte wpe input_layernorm post_attention_layernorm ln_1 ln_2 ln_f final_layernorm"
).split()
PATTERN = re.compile(r"""(?:\.|["'])(""" + "|".join(SUBMODULE_NAMES) + r""")(?:["']|\b(?![_(]))""")


def test_only_arch_names_model_submodules():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "arch.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if PATTERN.search(code):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not offenders, "model submodule names outside arch.py:\n" + "\n".join(offenders)


def test_the_pattern_sees_what_it_must():
    assert PATTERN.search("layer.self_attn.q_proj.weight")
    assert PATTERN.search('getattr(block, "down_proj")')
    assert not PATTERN.search("adapter.down_proj_weight(0)")  # the adapter's API, not a module name
    assert not PATTERN.search("q_proj = project_words(wq, words)")  # a local variable
