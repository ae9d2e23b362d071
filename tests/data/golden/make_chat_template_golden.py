#!/usr/bin/env python3
"""Writes chat_template_golden.json: the text transformers' apply_chat_template renders for a few
chat templates and conversations, the reference for tests/data/test_chat_template.cpp (our Jinja
subset interpreter must give byte-identical text).

Templates are included here as strings (nothing is fetched): SmolLM2-135M-Instruct's
tokenizer.chat_template (the same string as in models/SmolLM2-135M-Instruct.Q4_1.gguf), and the
Llama-2, Llama-3, Mistral and ChatML templates as their Hugging Face tokenizer_config.json files
spell them. A conversation the template rejects (raise_exception) records the error message.

Run: /work/venv/bin/python tests/data/golden/make_chat_template_golden.py
Needs: transformers, tokenizers, jinja2 (made with transformers 5.23.0, jinja2 3.1.6).
"""
import json
import os

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

TEMPLATES = {
    "smollm2": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    "chatml": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    "llama-2": "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
    "llama-3": "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
    "mistral": "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}",
    # Exercises the rest of the supported subset: whitespace control, trim_blocks/lstrip_blocks
    # (transformers compiles with both on), loop.last/loop.index, length, not/or, ~, elif, comments.
    "features": "{#- a comment -#}\n{%- set n = messages | length -%}\n{% for m in messages %}\n  {% if loop.first %}[{{ n }} messages]{% endif %}\n  {{- loop.index ~ ':' ~ m.role -}}\n  {% if m.role == 'system' %} (sys){% elif not (m.role == 'user' or m.role == 'tool') %} (bot){% else %} (usr){% endif %}\n{{ ' ' + m['content'] | trim }}{% if loop.last %}.{% endif %}\n{% endfor %}\n{%- if add_generation_prompt %}>{{ eos_token }}{% endif %}",
}

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "4"}],
    [{"role": "user", "content": "  Tell me a joke.  \n"}, {"role": "assistant", "content": " Why did the chicken cross the road? "},
     {"role": "user", "content": "Why?\nTell me."}, {"role": "assistant", "content": "To get to the other side. ✓ «ünïcödé»"}],
    [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
]

BOS, EOS = "<s>", "</s>"


def make_tokenizer(template):
    vocab = {"<unk>": 0, BOS: 1, EOS: 2}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<unk>")),
                                  bos_token=BOS, eos_token=EOS, unk_token="<unk>")
    tok.chat_template = template
    return tok


def main():
    cases = []
    for name, template in TEMPLATES.items():
        tok = make_tokenizer(template)
        for ci, conv in enumerate(CONVERSATIONS):
            for gen in (False, True):
                case = {"template": name, "conversation": ci, "add_generation_prompt": gen}
                try:
                    case["text"] = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
                except Exception as e:  # jinja2 TemplateError from raise_exception
                    case["error"] = str(e)
                cases.append(case)
    out = {"bos_token": BOS, "eos_token": EOS, "templates": TEMPLATES, "conversations": CONVERSATIONS,
           "cases": cases}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chat_template_golden.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
