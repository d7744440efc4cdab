"""Tiny in-process tokenizer and causal LMs for unit tests: built in well under a second, never downloaded."""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "The patient has a fever and a cough. Take paracetamol and rest.",
    "Chest pain with shortness of breath is an emergency: call an ambulance.",
    "患者发热咳嗽，建议休息并多喝水。胸痛伴呼吸困难请立即就医。",
    "user assistant system Hello, how are you? I am fine, thank you.",
    "Diabetes: thirst, frequent urination, weight loss. Test: HbA1c. Treatment: metformin.",
    "<|im_start|> <|im_end|> im_start im_end < | > / \\ [ ] { } ( ) : ; , . ! ? 0 1 2 3 4 5 6 7 8 9",
]


@functools.lru_cache(maxsize=4)
def _tokenizer_json(vocab_size: int) -> str:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return tok.to_str()


def tiny_tokenizer(chat_template: str | None = CHATML, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with ChatML control tokens (ids 0-2); any text, any language, encodes."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    tok.chat_template = chat_template
    return tok


def tiny_llama(tokenizer=None, *, hidden: int = 32, layers: int = 2, seed: int = 0) -> LlamaForCausalLM:
    """A 2-layer Llama with random weights sized for `tokenizer`; sdpa attention like the real models."""
    tokenizer = tokenizer or tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.2,  # wide enough logits that a LoRA on the tiny body can move the loss
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).eval()


def save_tiny(path, tokenizer=None, **kw):
    """Write a tiny model + tokenizer as an ordinary HF folder (what a user's local checkpoint looks like)."""
    tokenizer = tokenizer or tiny_tokenizer()
    model = tiny_llama(tokenizer, **kw)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# --- a custom architecture known to transformers only as a causal LM (no sequence-classification class)

from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel  # noqa: E402
from transformers.modeling_outputs import CausalLMOutputWithPast  # noqa: E402


class TinyGRUConfig(PretrainedConfig):
    model_type = "medtune-tiny-gru"

    def __init__(self, vocab_size=400, hidden_size=32, **kw):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        super().__init__(**kw)


class TinyGRUForCausalLM(PreTrainedModel, GenerationMixin):
    """Embedding -> GRU -> MLP -> LM head: causal by construction, nothing like a transformer, and with no
    `get_decoder`, so medtune must reach its hidden states through `output_hidden_states`."""

    config_class = TinyGRUConfig
    _no_split_modules: list = []

    def __init__(self, config):
        super().__init__(config)
        h = config.hidden_size
        self.embed = torch.nn.Embedding(config.vocab_size, h)
        self.rnn = torch.nn.GRU(h, h, batch_first=True)
        self.up = torch.nn.Linear(h, 2 * h)
        self.down = torch.nn.Linear(2 * h, h)
        self.lm_head = torch.nn.Linear(h, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed

    def set_input_embeddings(self, value):
        self.embed = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(self, input_ids=None, attention_mask=None, labels=None, output_hidden_states=False, use_cache=None,
                **kw):
        x = self.embed(input_ids)
        h, _ = self.rnn(x)
        h = h + self.down(torch.nn.functional.gelu(self.up(h)))
        logits = self.lm_head(h)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                                     labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=(x, h) if output_hidden_states else None)


AutoConfig.register(TinyGRUConfig.model_type, TinyGRUConfig, exist_ok=True)
AutoModelForCausalLM.register(TinyGRUConfig, TinyGRUForCausalLM, exist_ok=True)


def save_tiny_gru(path, tokenizer=None, seed=0):
    tokenizer = tokenizer or tiny_tokenizer()
    torch.manual_seed(seed)
    model = TinyGRUForCausalLM(TinyGRUConfig(vocab_size=len(tokenizer), hidden_size=32,
                                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
