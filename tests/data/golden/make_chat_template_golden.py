#!/usr/bin/env python3
"""Writes chat_template_golden.json: the text transformers' apply_chat_template renders for a few
chat templates and conversations, the reference for tests/data/test_chat_template.cpp (our Jinja
subset interpreter must give byte-identical text).

Templates are included here as strings or committed files (nothing is fetched): SmolLM2-135M-Instruct's
tokenizer.chat_template (the same string as in models/SmolLM2-135M-Instruct.Q4_1.gguf), and the
Llama-2, Llama-3, Mistral and ChatML templates as their Hugging Face tokenizer_config.json files
spell them; and Qwen3's (templates/qwen3.jinja: the chat_template of Qwen/Qwen3's
tokenizer_config.json, Apache-2.0, as TRL ships it in trl/chat_templates/qwen3.jinja), rendered
also with apply_chat_template's keyword arguments enable_thinking=False/True, on conversations whose
assistant turns think (<think>...</think> in content, or a reasoning_content field). A conversation
the template rejects (raise_exception) records the error message.

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
    "qwen3": open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates", "qwen3.jinja")).read(),
    "features": "{#- a comment -#}\n{%- set n = messages | length -%}\n{% for m in messages %}\n  {% if loop.first %}[{{ n }} messages]{% endif %}\n  {{- loop.index ~ ':' ~ m.role -}}\n  {% if m.role == 'system' %} (sys){% elif not (m.role == 'user' or m.role == 'tool') %} (bot){% else %} (usr){% endif %}\n{{ ' ' + m['content'] | trim }}{% if loop.last %}.{% endif %}\n{% endfor %}\n{%- if add_generation_prompt %}>{{ eos_token }}{% endif %}",
}

CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "4"}],
    [{"role": "user", "content": "  Tell me a joke.  \n"}, {"role": "assistant", "content": " Why did the chicken cross the road? "},
     {"role": "user", "content": "Why?\nTell me."}, {"role": "assistant", "content": "To get to the other side. ✓ «ünïcödé»"}],
    [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    # Reasoning: the thinking in content (Qwen3 moves it into <think> for the last turn only and
    # drops it from turns before the last user query), or apart as reasoning_content.
    [{"role": "system", "content": "Think first."}, {"role": "user", "content": "2+3?"},
     {"role": "assistant", "content": "<think>\n2 plus 3 is 5.\n</think>\n\n5"}],
    [{"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "<think>add</think>5"},
     {"role": "user", "content": "times 4?"}, {"role": "assistant", "content": "<think>\n5*4\n</think>\n\n20"}],
    [{"role": "user", "content": "Capital of France?"},
     {"role": "assistant", "content": "Paris.", "reasoning_content": "\nThe capital of France is Paris.\n"}],
]
# apply_chat_template keyword arguments tried per template (None: none given).
KWARGS = {"qwen3": [None, {"enable_thinking": False}, {"enable_thinking": True}]}

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
            for gen, kwargs in ((g, k) for g in (False, True) for k in KWARGS.get(name, [None])):
                case = {"template": name, "conversation": ci, "add_generation_prompt": gen}
                if kwargs is not None:
                    case["kwargs"] = kwargs
                try:
                    case["text"] = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen,
                                                           **(kwargs or {}))
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
