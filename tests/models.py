"""Models for tests, made the way Ollama makes them: the bundled weights under a manifest of
their own, with the template (and system prompt) the test needs."""

from __future__ import annotations

from pathlib import Path

from services.registry.bundled import BUNDLED_NAME, bundled_gguf, install_bundled
from services.registry.names import parse_name
from services.registry.store import MANIFEST_MEDIA_TYPE, SYSTEM_MEDIA_TYPE, TEMPLATE_MEDIA_TYPE, ModelStore

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}

# A ChatML template whose model calls tools with bare JSON (Ollama's tag "{") and thinks
# between <think> tags; the prompt opens the thinking when the request thinks.
THINKING_TOOLS_TEMPLATE = """\
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- if .Tools }}<|im_start|>system
Tools: {{ .Tools }}
To call one, answer only with JSON: {"name": <name>, "arguments": <object>}<|im_end|>
{{ end }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}
{{- if .ToolCalls }}{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", \
"arguments": {{ .Function.Arguments }}}{{ end }}
{{- else }}{{ .Content }}{{ end }}<|im_end|>
{{ else }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}
{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant
{{ if $.Think }}<think>{{ end }}
{{- end }}
{{- end }}"""


# A Hugging Face chat template in Qwen's style, for a GGUF of its own: tools in the system
# prompt, calls between <tool_call> tags, thinking opened by the prompt when it is enabled.
JINJA_THINKING_TOOLS_TEMPLATE = """\
{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools

You may call one or more functions. Their signatures, within <tools></tools> XML tags:
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>

For each function call, return a JSON object with the function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}\
<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% elif message.role == 'assistant' %}<|im_start|>assistant
{% if message.thinking %}<think>
{{ message.thinking }}
</think>

{% endif %}{{ message.content }}
{%- for call in message.tool_calls or [] %}
<tool_call>
{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking is defined and enable_thinking %}<think>
{% endif %}
{%- endif %}"""


def add_model(models: Path, name: str, template: str, system: str | None = None) -> None:
    """`name`: the bundled weights with `template` (and `system`) as its Ollama layers."""
    store = ModelStore(models)
    bundled = install_bundled(store)
    assert bundled is not None, "the bundled model is not installed"
    source = store.find(parse_name(BUNDLED_NAME))
    assert source is not None
    layers: list[dict[str, object]] = [
        {"mediaType": "application/vnd.ollama.image.model", "digest": source.weights_digest,
         "size": source.weights_size},
    ]  # fmt: skip
    for media_type, text in ((TEMPLATE_MEDIA_TYPE, template), (SYSTEM_MEDIA_TYPE, system)):
        if text is not None:
            data = text.encode()
            layers.append({"mediaType": media_type, "digest": store.put_blob_bytes(data), "size": len(data)})
    store.write_manifest(
        parse_name(name), {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "layers": layers}
    )


def with_chat_template(path: Path, template: str) -> Path:
    """The bundled GGUF with `template` as its chat template (`tokenizer.chat_template`),
    written to `path` by the gguf package's own metadata copier."""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    source = bundled_gguf()
    assert source is not None
    reader = gguf.GGUFReader(str(source))
    writer = gguf.GGUFWriter(str(path), str(reader.fields["general.architecture"].contents()))
    new = {gguf.Keys.Tokenizer.CHAT_TEMPLATE: MetadataDetails(gguf.GGUFValueType.STRING, template)}
    copy_with_new_metadata(reader, writer, new, remove_metadata=[])
    return path


def f16_weights(path: Path) -> Path:
    """The bundled weights dequantized to F16 (norms F32), written to `path` with the gguf
    package: a model Ollama's rules allow to be quantized."""
    import gguf
    import numpy as np
    from gguf.quants import dequantize

    source = bundled_gguf()
    assert source is not None
    reader = gguf.GGUFReader(str(source))
    writer = gguf.GGUFWriter(str(path), str(reader.fields["general.architecture"].contents()))
    for key, value in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key == "general.file_type":
            writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
            continue
        kind = value.types[0]
        writer.add_key_value(
            key, value.contents(), kind, sub_type=value.types[-1] if len(value.types) > 1 else None
        )
    for tensor in reader.tensors:
        weights = dequantize(tensor.data, tensor.tensor_type).reshape(tuple(reversed(tensor.shape.tolist())))
        writer.add_tensor(tensor.name, weights.astype(np.float32 if weights.ndim == 1 else np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
