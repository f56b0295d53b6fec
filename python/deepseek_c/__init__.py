"""deepseek_c - Python bindings for libdeepseek (include/deepseek.h) over ctypes.

    m = Model("models/default")              # a Hugging Face folder or a .gguf file
    m.tokenize("text"), m.detokenize(ids)
    m.generate("ROMEO:", max_tokens=32, temperature=0.8, seed=1)          -> str
    for piece in m.generate("ROMEO:", stream=True): ...                   -> str pieces
    m.chat([{"role": "user", "content": "Hi"}], thinking=True)            -> ChatReply
    m.logits(ids)                                # (len(ids), vocab) numpy array (lists without numpy)
    s = m.session(n_ctx=256); s.decode(ids); s.logits(); s.generate(...)

Every library error raises DeepSeekError with the library's message. A
KeyboardInterrupt while iterating a stream stops the generation (the C
library makes one token per call, so Ctrl-C is seen between tokens).
Sessions of one model may run on several threads at once (the model is
read-only); one session belongs to one thread at a time.
"""
import ctypes
import ctypes.util
import os

try:
    import numpy as _np
except ImportError:  # numpy is optional: logits come back as lists
    _np = None

__all__ = ["Model", "Session", "ChatReply", "DeepSeekError", "library_version"]

# ------------------------------------------------------------------ loading


def _find_library():
    here = os.path.dirname(os.path.abspath(__file__))
    cands = []
    if os.environ.get("DEEPSEEK_LIB"):
        cands.append(os.environ["DEEPSEEK_LIB"])
    cands.append(os.path.join(here, "libdeepseek.so.0"))                              # shipped by pip install
    cands.append(os.path.join(os.path.dirname(os.path.dirname(here)), "build", "libdeepseek.so.0"))  # a checkout
    found = ctypes.util.find_library("deepseek")
    if found:
        cands.append(found)
    cands.append("libdeepseek.so.0")
    errors = []
    for c in cands:
        if os.sep in c and not os.path.exists(c):
            continue
        try:
            return ctypes.CDLL(c)
        except OSError as e:
            errors.append("%s: %s" % (c, e))
    raise ImportError("deepseek_c: libdeepseek not found (set DEEPSEEK_LIB, run `make lib`, or `make install`); "
                      + "; ".join(errors))


_lib = _find_library()

_i32p = ctypes.POINTER(ctypes.c_int32)
_f32p = ctypes.POINTER(ctypes.c_float)


class _Error(ctypes.Structure):
    _fields_ = [("code", ctypes.c_int), ("message", ctypes.c_char * 512)]


class _ModelOptions(ctypes.Structure):
    _fields_ = [("threads", ctypes.c_int), ("kv_type", ctypes.c_int), ("n_ctx", ctypes.c_int64)]


class _ModelInfo(ctypes.Structure):
    _fields_ = [("architecture", ctypes.c_char_p), ("arch_version", ctypes.c_int),
                ("vocab_size", ctypes.c_int64), ("n_ctx_train", ctypes.c_int64), ("n_ctx", ctypes.c_int64),
                ("n_layer", ctypes.c_int64), ("hidden_size", ctypes.c_int64), ("n_head", ctypes.c_int64),
                ("n_routed_experts", ctypes.c_int64), ("n_experts_per_tok", ctypes.c_int64),
                ("n_mtp", ctypes.c_int64), ("n_params", ctypes.c_int64), ("has_tokenizer", ctypes.c_int),
                ("tokenizer_vocab", ctypes.c_int64), ("bos_id", ctypes.c_int32), ("eos_id", ctypes.c_int32),
                ("add_bos", ctypes.c_int), ("chat_format", ctypes.c_int), ("has_chat_template", ctypes.c_int)]


class _SamplerParams(ctypes.Structure):
    _fields_ = [("temperature", ctypes.c_float), ("top_k", ctypes.c_int32), ("top_p", ctypes.c_float),
                ("min_p", ctypes.c_float), ("repetition_penalty", ctypes.c_float),
                ("frequency_penalty", ctypes.c_float), ("presence_penalty", ctypes.c_float),
                ("seed", ctypes.c_uint64)]


class _SessionOptions(ctypes.Structure):
    _fields_ = [("n_ctx", ctypes.c_int64), ("kv_type", ctypes.c_int), ("threads", ctypes.c_int),
                ("mtp", ctypes.c_int), ("sampling", _SamplerParams)]


class _GenOptions(ctypes.Structure):
    _fields_ = [("max_tokens", ctypes.c_int64), ("ignore_eos", ctypes.c_int), ("mtp", ctypes.c_int)]


class _ChatMessage(ctypes.Structure):
    _fields_ = [("role", ctypes.c_char_p), ("content", ctypes.c_char_p)]


class _ReplySplit(ctypes.Structure):
    _fields_ = [("reasoning", ctypes.c_void_p), ("reasoning_len", ctypes.c_size_t),
                ("content", ctypes.c_void_p), ("content_len", ctypes.c_size_t),
                ("has_reasoning", ctypes.c_int), ("reasoning_done", ctypes.c_int)]


def _sig(name, res, *args):
    f = getattr(_lib, name)
    f.restype = res
    f.argtypes = list(args)
    return f


_E = ctypes.POINTER(_Error)
_vp = ctypes.c_void_p
_version = _sig("deepseek_version", ctypes.c_char_p)
_free = _sig("deepseek_free", None, _vp)
_model_options_default = _sig("deepseek_model_options_default", None, ctypes.POINTER(_ModelOptions))
_model_load = _sig("deepseek_model_load", ctypes.c_int, ctypes.POINTER(_vp), ctypes.c_char_p,
                   ctypes.POINTER(_ModelOptions), _E)
_model_free = _sig("deepseek_model_free", None, _vp)
_model_get_info = _sig("deepseek_model_get_info", None, _vp, ctypes.POINTER(_ModelInfo))
_tokenize = _sig("deepseek_tokenize", ctypes.c_int, _vp, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                 ctypes.POINTER(_i32p), ctypes.POINTER(ctypes.c_int64), _E)
_detokenize = _sig("deepseek_detokenize", ctypes.c_int, _vp, _i32p, ctypes.c_int64, ctypes.c_uint,
                   ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t), _E)
_chat_apply = _sig("deepseek_chat_apply", ctypes.c_int, _vp, ctypes.c_int, ctypes.POINTER(_ChatMessage), ctypes.c_int,
                   ctypes.c_int, ctypes.c_int, ctypes.POINTER(_i32p), ctypes.POINTER(ctypes.c_int64), _E)
_chat_format_from_name = _sig("deepseek_chat_format_from_name", ctypes.c_int, ctypes.c_char_p)
_chat_thinks = _sig("deepseek_chat_thinks", ctypes.c_int, ctypes.c_int, ctypes.c_int)
_split = _sig("deepseek_chat_split_reasoning", None, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int,
              ctypes.POINTER(_ReplySplit))
_sampler_params_default = _sig("deepseek_sampler_params_default", None, ctypes.POINTER(_SamplerParams))
_session_options_default = _sig("deepseek_session_options_default", None, ctypes.POINTER(_SessionOptions))
_session_new = _sig("deepseek_session_new", ctypes.c_int, ctypes.POINTER(_vp), _vp, ctypes.POINTER(_SessionOptions), _E)
_session_free = _sig("deepseek_session_free", None, _vp)
_session_n_past = _sig("deepseek_session_n_past", ctypes.c_int64, _vp)
_session_n_ctx = _sig("deepseek_session_n_ctx", ctypes.c_int64, _vp)
_session_tokens = _sig("deepseek_session_tokens", _i32p, _vp, ctypes.POINTER(ctypes.c_int64))
_session_decode = _sig("deepseek_session_decode", ctypes.c_int, _vp, _i32p, ctypes.c_int64, _f32p, _E)
_session_logits = _sig("deepseek_session_logits", _f32p, _vp, ctypes.POINTER(ctypes.c_int64))
_session_mtp_logits = _sig("deepseek_session_mtp_logits", ctypes.c_int, _vp, ctypes.c_int32,
                           ctypes.POINTER(_f32p), _E)
_session_truncate = _sig("deepseek_session_truncate", ctypes.c_int, _vp, ctypes.c_int64, _E)
_session_set_sampling = _sig("deepseek_session_set_sampling", ctypes.c_int, _vp, ctypes.POINTER(_SamplerParams), _E)
_session_add_stop = _sig("deepseek_session_add_stop", ctypes.c_int, _vp, ctypes.c_char_p, _E)
_gen_options_default = _sig("deepseek_generate_options_default", None, ctypes.POINTER(_GenOptions))
_gen_begin = _sig("deepseek_generate_begin", ctypes.c_int, _vp, _i32p, ctypes.c_int64, ctypes.POINTER(_GenOptions), _E)
_gen_next = _sig("deepseek_generate_next", ctypes.c_int, _vp, ctypes.POINTER(ctypes.c_int32),
                 ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_int), _E)

KV_TYPES = {"f32": 0, "q8": 1, "fp8": 2, "bf16": 3}
FINISH = {0: "length", 1: "eos", 2: "callback", 3: "stop"}


class DeepSeekError(Exception):
    """An error reported by libdeepseek: .code (negative DEEPSEEK_E*) and the library's message."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def _check(rc, err):
    if rc < 0:
        raise DeepSeekError(rc, err.message.decode("utf-8", "replace") or "error %d" % rc)
    return rc


def library_version():
    """The version string of the libdeepseek actually loaded."""
    return _version().decode()


def _ids_array(ids):
    ids = [int(i) for i in ids]
    return (ctypes.c_int32 * max(len(ids), 1))(*ids), len(ids)


def _take_ids(p, n):
    try:
        return [p[i] for i in range(n.value)]
    finally:
        _free(ctypes.cast(p, _vp))


def _sampling(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, frequency_penalty=0.0,
              presence_penalty=0.0, seed=0):
    p = _SamplerParams()
    _sampler_params_default(ctypes.byref(p))
    p.temperature, p.top_k, p.top_p, p.min_p = temperature, top_k, top_p, min_p
    p.repetition_penalty, p.frequency_penalty, p.presence_penalty, p.seed = (
        repetition_penalty, frequency_penalty, presence_penalty, seed)
    return p


_SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "frequency_penalty",
                  "presence_penalty", "seed")


class ChatReply:
    """A chat reply: .content, .reasoning (None when the reply had no reasoning block),
    .reasoning_done, .text (all generated text), .finish ("length", "eos", "stop")."""

    def __init__(self, text, reasoning, content, reasoning_done, finish):
        self.text, self.reasoning, self.content = text, reasoning, content
        self.reasoning_done, self.finish = reasoning_done, finish

    def __repr__(self):
        return "ChatReply(reasoning=%r, content=%r)" % (self.reasoning, self.content)


def _split_reasoning(text, starts):
    raw = text.encode("utf-8")
    buf = ctypes.create_string_buffer(raw, len(raw))
    s = _ReplySplit()
    _split(buf, len(raw), int(starts), ctypes.byref(s))
    base = ctypes.addressof(buf)

    def part(ptr, n):
        return raw[ptr - base:ptr - base + n].decode("utf-8", "replace") if ptr else ""

    reasoning = part(s.reasoning, s.reasoning_len) if s.has_reasoning else None
    return reasoning, part(s.content, s.content_len), bool(s.reasoning_done)


# ------------------------------------------------------------------ model


class _Owned:
    """A library handle freed by close(): also on garbage collection and at
    the end of a `with` block."""

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


class Model(_Owned):
    """A loaded model (weights memory-mapped, read-only; shareable across threads).

    Model(path=None, threads=0, kv_type="f32", n_ctx=0): path is a Hugging Face
    folder or a .gguf file (None: $DEEPSEEK_MODEL, else ./models/default)."""

    def __init__(self, path=None, threads=0, kv_type="f32", n_ctx=0):
        if path is None:
            path = os.environ.get("DEEPSEEK_MODEL", "models/default")
        if kv_type not in KV_TYPES:
            raise ValueError("kv_type: expected one of %s" % ", ".join(KV_TYPES))
        self._h = None
        o = _ModelOptions()
        _model_options_default(ctypes.byref(o))
        o.threads, o.kv_type, o.n_ctx = threads, KV_TYPES[kv_type], n_ctx
        h, err = _vp(), _Error()
        _check(_model_load(ctypes.byref(h), os.fsencode(path), ctypes.byref(o), ctypes.byref(err)), err)
        self._h = h
        self.path = path
        info = _ModelInfo()
        _model_get_info(h, ctypes.byref(info))
        self.info = {k: getattr(info, k) for k, _ in _ModelInfo._fields_}
        self.info["architecture"] = info.architecture.decode()
        self.vocab_size = info.vocab_size
        self.n_ctx = info.n_ctx

    def close(self):
        """Frees the model (its sessions must be closed first)."""
        if self._h:
            _model_free(self._h)
            self._h = None


    # -------------------------------------------------------------- text
    def tokenize(self, text, special=True, add_bos=False):
        """Text (str or bytes) -> token ids; special: recognize special-token strings."""
        raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        p, n, err = _i32p(), ctypes.c_int64(), _Error()
        _check(_tokenize(self._h, raw, len(raw), (1 if special else 0) | (2 if add_bos else 0),
                         ctypes.byref(p), ctypes.byref(n), ctypes.byref(err)), err)
        return _take_ids(p, n)

    def detokenize(self, ids, skip_special=False, raw=False):
        """Token ids -> str (bytes with raw=True: exact bytes, possibly invalid UTF-8)."""
        arr, n = _ids_array(ids)
        out, ln, err = ctypes.c_void_p(), ctypes.c_size_t(), _Error()
        _check(_detokenize(self._h, arr, n, (1 if skip_special else 0) | (2 if raw else 0), ctypes.byref(out),
                           ctypes.byref(ln), ctypes.byref(err)), err)
        try:
            b = ctypes.string_at(out, ln.value)
        finally:
            _free(out)
        return b if raw else b.decode("utf-8")

    def apply_chat_template(self, messages, add_generation_prompt=True, thinking=False, format="auto"):
        """messages: [{"role": ..., "content": ...}] -> token ids (the official template, token for token)."""
        f = _chat_format_from_name(format.encode()) if isinstance(format, str) else int(format)
        if f < 0:
            raise ValueError("format: expected auto, v3, r1, v3.1 or v2")
        keep = [(m["role"].encode(), (m.get("content") or "").encode("utf-8")) for m in messages]
        arr = (_ChatMessage * max(len(keep), 1))(*[_ChatMessage(r, c) for r, c in keep])
        p, n, err = _i32p(), ctypes.c_int64(), _Error()
        _check(_chat_apply(self._h, f, arr, len(keep), int(add_generation_prompt), int(thinking), ctypes.byref(p),
                           ctypes.byref(n), ctypes.byref(err)), err)
        return _take_ids(p, n)

    # -------------------------------------------------------------- sessions
    def session(self, n_ctx=0, kv_type=None, threads=0, mtp=False, **sampling):
        """A new sequence (KV cache + sampler) over this model; see Session."""
        return Session(self, n_ctx=n_ctx, kv_type=kv_type, threads=threads, mtp=mtp, **sampling)

    def generate(self, prompt, max_tokens=32, stream=False, stop=None, ignore_eos=False, n_ctx=0, **sampling):
        """Continues prompt (str: tokenized as `deepseek generate --prompt`; or a list of ids).
        Returns the text, or with stream=True an iterator of text pieces. Sampling keywords:
        temperature, top_k, top_p, min_p, repetition_penalty, frequency_penalty,
        presence_penalty, seed (the same seed gives the CLI's text)."""
        ids = self.tokenize(prompt, special=True, add_bos=True) if isinstance(prompt, (str, bytes)) else list(prompt)
        s = self.session(n_ctx=n_ctx, **sampling)
        for st in stop or ():
            s.add_stop(st)
        it = s._stream(ids, max_tokens, ignore_eos, own=True)
        return it if stream else "".join(it)

    def chat(self, messages, max_tokens=256, thinking=False, format="auto", stream=False, n_ctx=0, **sampling):
        """One assistant turn for messages ([{"role", "content"}]). Returns a ChatReply with the
        reasoning separated from the content; with stream=True an iterator of ("reasoning" |
        "content", text) pairs."""
        ids = self.apply_chat_template(messages, True, thinking, format)
        f = self.info["chat_format"] if format == "auto" else _chat_format_from_name(format.encode())
        starts = bool(_chat_thinks(f, int(thinking)))
        s = self.session(n_ctx=n_ctx, **sampling)
        it = s._stream(ids, max_tokens, False, own=True)
        if stream:
            return _chat_stream(it, starts)
        text = "".join(it)
        reasoning, content, done = _split_reasoning(text, starts)
        return ChatReply(text, reasoning, content, done, s.finish)

    def logits(self, ids):
        """Logits of every position of ids (a fresh sequence): (len(ids), vocab_size) as a
        NumPy float32 array, or a list of lists without NumPy."""
        with self.session(n_ctx=max(len(ids), 1)) as s:
            return s.decode(ids, all_logits=True)


def _chat_stream(it, starts):
    text, sent_r, sent_c = "", 0, 0
    for piece in it:
        text += piece
        r, c, _ = _split_reasoning(text, starts)
        # a marker may still be forming ("</thi"): hold back what could be one
        hold = 0
        for k in range(1, 8):
            if text.endswith("</think>"[:k]) or text.endswith("<think>"[:k]):
                hold = k
        if hold and c:
            c = c[:max(len(c) - hold, 0)]
        elif hold and r:
            r = r[:max(len(r) - hold, 0)]
        if r and len(r) > sent_r:
            yield ("reasoning", r[sent_r:])
            sent_r = len(r)
        if c and len(c) > sent_c:
            yield ("content", c[sent_c:])
            sent_c = len(c)
    r, c, _ = _split_reasoning(text, starts)
    if r and len(r) > sent_r:
        yield ("reasoning", r[sent_r:])
    if c and len(c) > sent_c:
        yield ("content", c[sent_c:])


# ------------------------------------------------------------------ session


class Session(_Owned):
    """One sequence over a Model: KV cache, sampler, stop strings.

    decode(ids) appends tokens (prefill / decode); logits() the last position's;
    mtp_logits(next_token) the MTP module's (mtp=True); truncate(n); tokens; n_past;
    generate(prompt_ids, ...) continues the sequence."""

    def __init__(self, model, n_ctx=0, kv_type=None, threads=0, mtp=False, **sampling):
        bad = set(sampling) - set(_SAMPLING_KEYS)
        if bad:
            raise TypeError("unknown option(s): %s" % ", ".join(sorted(bad)))
        self._h = None
        self.model = model
        o = _SessionOptions()
        _session_options_default(ctypes.byref(o))
        o.n_ctx, o.threads, o.mtp = n_ctx, threads, int(mtp)
        o.kv_type = -1 if kv_type is None else KV_TYPES[kv_type]
        o.sampling = _sampling(**sampling)
        h, err = _vp(), _Error()
        _check(_session_new(ctypes.byref(h), model._h, ctypes.byref(o), ctypes.byref(err)), err)
        self._h = h
        self.finish = None

    def close(self):
        if self._h:
            _session_free(self._h)
            self._h = None


    @property
    def n_past(self):
        return _session_n_past(self._h)

    @property
    def n_ctx(self):
        return _session_n_ctx(self._h)

    @property
    def tokens(self):
        n = ctypes.c_int64()
        p = _session_tokens(self._h, ctypes.byref(n))
        return [p[i] for i in range(n.value)]

    def decode(self, ids, all_logits=False):
        """Appends ids in one batch; with all_logits returns every position's logits."""
        arr, n = _ids_array(ids)
        V = self.model.vocab_size
        out = None
        if all_logits:
            out = _np.empty((n, V), dtype=_np.float32) if _np is not None else (ctypes.c_float * (n * V))()
        ptr = None if out is None else (out.ctypes.data_as(_f32p) if _np is not None else out)
        err = _Error()
        _check(_session_decode(self._h, arr, n, ptr, ctypes.byref(err)), err)
        if out is None or _np is not None:
            return out
        return [list(out[i * V:(i + 1) * V]) for i in range(n)]

    def _vec(self, p):
        V = self.model.vocab_size
        if _np is not None:
            return _np.ctypeslib.as_array(p, shape=(V,)).copy()
        return [p[i] for i in range(V)]

    def logits(self):
        """The logits predicting the next token (None when there are none)."""
        p = _session_logits(self._h, None)
        return self._vec(p) if p else None

    def mtp_logits(self, next_token):
        """The MTP module's logits for the token after next_token (session made with mtp=True)."""
        p, err = _f32p(), _Error()
        _check(_session_mtp_logits(self._h, int(next_token), ctypes.byref(p), ctypes.byref(err)), err)
        return self._vec(p)

    def truncate(self, n):
        err = _Error()
        _check(_session_truncate(self._h, int(n), ctypes.byref(err)), err)

    def set_sampling(self, **sampling):
        p, err = _sampling(**sampling), _Error()
        _check(_session_set_sampling(self._h, ctypes.byref(p), ctypes.byref(err)), err)

    def add_stop(self, text):
        err = _Error()
        _check(_session_add_stop(self._h, text.encode("utf-8"), ctypes.byref(err)), err)

    def generate(self, prompt_ids, max_tokens=32, stream=False, ignore_eos=False):
        """Appends prompt_ids and generates with the session's sampler; text or an iterator."""
        it = self._stream(list(prompt_ids), max_tokens, ignore_eos)
        return it if stream else "".join(it)

    def generate_tokens(self, prompt_ids, max_tokens=32, ignore_eos=False):
        """Appends prompt_ids and generates; returns the generated token ids (also for
        models without a tokenizer, e.g. a bare GGUF file)."""
        self._begin(list(prompt_ids), max_tokens, ignore_eos)
        return [t for t, _ in self._steps(False)]

    def _begin(self, ids, max_tokens, ignore_eos):
        arr, n = _ids_array(ids)
        o = _GenOptions()
        _gen_options_default(ctypes.byref(o))
        o.max_tokens, o.ignore_eos = max_tokens, int(ignore_eos)
        err = _Error()
        _check(_gen_begin(self._h, arr, n, ctypes.byref(o), ctypes.byref(err)), err)

    def _stream(self, ids, max_tokens, ignore_eos, own=False):
        self._begin(ids, max_tokens, ignore_eos)
        return (text for _, text in self._steps(own) if text)

    def _steps(self, own):
        """(token, text) per generated token, then (-1, held-back text)."""
        tok, text, ln, fin, err = ctypes.c_int32(), ctypes.c_void_p(), ctypes.c_size_t(), ctypes.c_int(), _Error()
        try:
            while True:
                more = _check(_gen_next(self._h, ctypes.byref(tok), ctypes.byref(text), ctypes.byref(ln),
                                        ctypes.byref(fin), ctypes.byref(err)), err)
                # the library releases complete UTF-8 only
                piece = ctypes.string_at(text, ln.value).decode("utf-8") if ln.value else ""
                if more:
                    yield tok.value, piece
                else:
                    if piece:
                        yield -1, piece
                    self.finish = FINISH.get(fin.value, str(fin.value))
                    return
        finally:
            if own:   # KeyboardInterrupt / GeneratorExit: nothing more is generated
                self.close()
