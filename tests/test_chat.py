"""Chat templates: the built-in byte template and checkpoint jinja templates, with token ids spliced verbatim."""

import json

import pytest

from zaya_jax.data import ByteTokenizer
from zaya_jax.sampling import ByteChatTemplate, ChatTemplateError, JinjaChatTemplate, load_chat_template

# A Gemma-style template, as in a checkpoint's tokenizer_config.json.
GEMMA_LIKE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] | trim }}"
              "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def test_byte_template_uses_marker_ids():
  tok = ByteTokenizer()
  m = tok.token_id
  ids = ByteChatTemplate().user_prompt(tok, ["hi ", [m("</think>")], "!"])
  assert ids == [tok.bos_id, m("<|user|>"), *tok.encode("hi "), m("</think>"), *tok.encode("!"),
                 m("<|end_of_turn|>"), m("<|assistant|>")]
  assert ByteChatTemplate(think=True).user_prompt(tok, ["x"])[-1] == m("<think>")
  assert tok.decode(ids) == "<|user|>hi </think>!<|end_of_turn|><|assistant|>"


def test_jinja_template_renders_and_splices_ids(tmp_path):
  tok = ByteTokenizer()
  (tmp_path / "tokenizer_config.json").write_text(json.dumps(
      {"chat_template": GEMMA_LIKE, "bos_token": {"content": "<bos>"}, "eos_token": "<eos>"}))
  template = load_chat_template(str(tmp_path))
  assert template.render([{"role": "user", "content": " hi "}]) == (
      "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n")
  ids = template.user_prompt(tok, ["Q ", [3, 4], " and ", [5]])
  expected = (tok.encode("<bos><start_of_turn>user\nQ ") + [3, 4] + tok.encode(" and ") + [5]
              + tok.encode("<end_of_turn>\n<start_of_turn>model\n"))
  assert ids == expected


def test_template_errors_are_named(tmp_path):
  with pytest.raises(ChatTemplateError, match="no chat_template"):
    load_chat_template(str(tmp_path))
  with pytest.raises(ChatTemplateError, match="cannot parse"):
    JinjaChatTemplate("{% for %}")
  with pytest.raises(ChatTemplateError, match="ByteTokenizer"):
    ByteChatTemplate().user_prompt(object(), ["x"])
  failing = JinjaChatTemplate("{{ raise_exception('only user turns') }}")
  with pytest.raises(ChatTemplateError, match="only user turns"):
    failing.render([{"role": "user", "content": "x"}])
