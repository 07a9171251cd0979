"""Reference side of tests/hf_parity.rs: Hugging Face transformers' Qwen2 on the same tokens.

  hf_parity.py forward DIR TOKENS.json OUT.json   load lehr's checkpoint with from_pretrained, write logits
  hf_parity.py make DIR TOKENS.json OUT.json      write a random transformers Qwen2 checkpoint, write its logits
"""

import json
import sys

import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM


def logits(model, tokens):
    model.eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens, dtype=torch.long)).logits
    return out.float().tolist()


def main():
    mode, d, tokens_path, out_path = sys.argv[1:5]
    tokens = json.load(open(tokens_path))
    torch.manual_seed(0)
    if mode == "forward":
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    else:
        cfg = Qwen2Config(
            vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-6,
            max_position_embeddings=256, tie_word_embeddings=False, initializer_range=0.05,
        )
        model = Qwen2ForCausalLM(cfg).to(torch.float32)
        # transformers initializes norms at 1 and biases at 0: perturb them so they count.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias") or "norm" in name:
                    p.add_(torch.randn_like(p) * 0.1)
        model.save_pretrained(d, safe_serialization=True)
    json.dump({"logits": logits(model, tokens)}, open(out_path, "w"))


if __name__ == "__main__":
    main()
