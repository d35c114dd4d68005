"""Turning a language model's raw text into something a voice should say, and telling when it is not
worth saying at all."""

from __future__ import annotations

import re
from collections.abc import Sequence

from avatar.errors import InvalidRequestError
from avatar.prompt import prompt_parts
from avatar.types import ChatMessage

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(])")
_MARKUP = re.compile(r"[*_`#>~]|\[[^\]]*\]\([^)]*\)|\(\s*(?:laughs|smiles|pauses)[^)]*\)", re.IGNORECASE)
_ROLE_PREFIX = re.compile(r"^\s*(?:assistant|[A-Z][a-z]+)\s*:\s*")
_NON_SPEECH = re.compile(r"[^\w\s.,!?;:'\"()\-–—%$€£&/]", re.UNICODE)
# Arithmetic signs between numbers, which the clean-up would otherwise drop ("7 × 8 = 56" → "7 8 56").
# A minus needs spaces around it: 1990-2000 is a range.
_ARITHMETIC = (
    (re.compile(r"(?<=\d)\s*[×*]\s*(?=\d)"), " times "),
    (re.compile(r"(?<=\d)\s*\+\s*(?=\d)"), " plus "),
    (re.compile(r"(?<=\d)\s+[-−]\s+(?=\d)"), " minus "),
    (re.compile(r"(?<=\d)\s*÷\s*(?=\d)"), " divided by "),
    (re.compile(r"(?<=\d)\s*=\s*(?=-?\d)"), " equals "),
)


def split_sentences(text: str) -> list[str]:
    """Sentences of running text (a sentence ends in . ! or ? followed by a capital or digit)."""
    return [part.strip() for part in _SENTENCE_END.split(text.strip()) if part.strip()]


def clean_reply(text: str, max_sentences: int = 2) -> str:
    """Strip markup, emoji and role prefixes; keep at most ``max_sentences`` whole sentences.

    A trailing fragment cut off by the token limit is dropped when at least one whole sentence exists.
    """
    text = speakable_arithmetic(text)
    text = _MARKUP.sub("", text)
    text = _NON_SPEECH.sub("", text)
    text = _ROLE_PREFIX.sub("", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([.,!?;:])", r"\1", text)
    sentences = split_sentences(text)
    whole = [s for s in sentences if re.search(r"[.!?][\"')\]]*$", s)]
    if whole:
        kept = []
        for s in sentences:
            if not re.search(r"[.!?][\"')\]]*$", s):
                break
            kept.append(s)
        sentences = kept or whole
    return " ".join(sentences[:max_sentences]).strip()


_ALLOWED_CONTROLS = frozenset("\t\n\r")


def invalid_characters(text: str) -> str | None:
    """What makes ``text`` unfit for any text field (NUL and other control characters, lone UTF-16
    surrogates, Unicode non-characters), as the end of a sentence for the user; None when it is fine."""
    for ch in text:
        code = ord(ch)
        if code == 0:
            return "holds a NUL character"
        if (code < 0x20 or 0x7F <= code < 0xA0) and ch not in _ALLOWED_CONTROLS:
            return f"holds the control character U+{code:04X}"
        if 0xD800 <= code <= 0xDFFF:
            return f"holds a lone surrogate (U+{code:04X}), which is not text"
        if 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE:
            return f"holds the non-character U+{code:04X}"
    return None


def checked_text(text: str, limit: int, field: str = "text", *, required: bool = True) -> str:
    """``text`` stripped, once it passes the checks every entry point applies to a text field (the HTTP
    fields, the live data channel's typed turns, the CLI): valid characters (``invalid_characters``),
    something left after stripping when ``required``, and at most ``limit`` characters. Otherwise
    InvalidRequestError (422) naming ``field`` and what to change."""
    problem = invalid_characters(text)
    if problem is not None:
        raise InvalidRequestError(f"The {field!r} field {problem}; send plain text.")
    stripped = text.strip()
    if required and not stripped:
        raise InvalidRequestError(f"The {field!r} field is empty; say or type something.")
    if len(stripped) > limit:
        raise InvalidRequestError(f"The {field!r} field is {len(stripped):,} characters long; the limit is {limit:,}.")
    return stripped


def plain_text(text: str) -> str:
    """``text`` without the characters ``invalid_characters`` names (for what a model wrote, before it is
    kept in a session's history)."""
    return "".join(ch for ch in text if invalid_characters(ch) is None)


def unspeakable_reason(text: str) -> str | None:
    """Why a voice cannot say ``text`` (a sentence for the user), or None when it can be spoken: it must
    be valid text and hold at least one letter or digit once markup and emoji are set aside."""
    problem = invalid_characters(text)
    if problem is not None:
        return f"The text {problem}; send plain text."
    spoken = _NON_SPEECH.sub("", _MARKUP.sub("", text))
    if not any(ch.isalnum() for ch in spoken):
        return "The text has nothing to say aloud: it holds no letters or digits (only emoji, symbols or punctuation)."
    return None


def speakable_arithmetic(text: str) -> str:
    """Arithmetic signs between numbers as words: "7 × 8 = 56" → "7 times 8 equals 56"."""
    for sign, words in _ARITHMETIC:
        text = sign.sub(words, text)
    return text


# ------------------------------------------------------------------------------- off the rails

_TEMPLATE_LEAK = re.compile(r"<\||\|>|\bim_(?:start|end)\b|\b(?:user|assistant|system|visitor)\s*:", re.IGNORECASE)
_OUT_OF_CHARACTER = re.compile(
    r"\b(?:as an ai|an ai(?: language)? model|language model|artificial intelligence|ai assistant|"
    r"virtual assistant|chatbot|can(?:no|'|’)t assist\b|qwen|alibaba cloud|smollm|hugging ?face|openai|chatgpt|"
    r"(?:i am|i['’]m)(?: just| only| merely)? an? (?:ai|computer program|machine)|"
    r"i don['’]t have (?:a body|feelings))\b",
    re.IGNORECASE,
)
# A call: a name and its parenthesis with no space between, as code writes it and prose does not.
_CODE = re.compile(r"\b[A-Za-z_][\w.]*\([^()]*\)")
_STUCK = re.compile(r"\b(\w+)(?:\W+\1\b){3,}", re.IGNORECASE)  # the same word four times running
ECHO_WORDS = 6
# Words of a system prompt's instructions: a persona may describe itself in its prompt's words ("a
# retired astronaut who flew the Space Shuttle"), but a run that includes these reads the orders back.
_INSTRUCTION_WORDS = frozenset(
    "you your you're yourself reply replies answer sentence sentences visitor visitor's never lists emoji "
    "directions language instructions".split()
)
# A reply that paraphrases its orders ("I am always speaking about myself as I and never as Eileen")
# shares no six words with them, but holds several of these and a few words of the orders in a row.
_ORDER_WORDS = _INSTRUCTION_WORDS | frozenset(
    "always speak speaking talk talking third person facts orders order rules instruction prompt".split()
)
ORDER_WORDS_MIN = 3
PARAPHRASE_RUN = 3
# A reply that repeats this many words of the knowledge in a row recites it: more than one sentence of
# it (a persona answering with one sentence of its facts, nearly word for word, is answering well).
KNOWLEDGE_RUN = 24
_WORD = re.compile(r"[\w']+")


def words(text: str) -> list[str]:
    """The lower-case words of ``text`` (apostrophes kept: "I'm" is one word)."""
    return _WORD.findall(text.lower())


def shared_runs(text: str, source: str, run: int = ECHO_WORDS) -> list[tuple[str, ...]]:
    """Every ``run`` consecutive words of ``text`` that also appear, in order, in ``source``."""
    said, seen = words(text), words(source)
    grams = {tuple(seen[i : i + run]) for i in range(len(seen) - run + 1)}
    return [gram for i in range(len(said) - run + 1) if (gram := tuple(said[i : i + run])) in grams]


PARROT_WORDS = 4  # a piece that is the question's first words, this many or more, parrots it
REPEATS_QUESTION = "repeats the question"


def echoes(text: str, source: str, run: int = ECHO_WORDS) -> bool:
    """True when ``text`` repeats ``run`` or more consecutive words of ``source``."""
    return bool(shared_runs(text, source, run))


def recites(piece: str, knowledge: str, spoken: str = "") -> bool:
    """Whether ``piece``, said after ``spoken`` (the reply so far), makes a run of ``KNOWLEDGE_RUN``
    words of ``knowledge`` that ends in the piece."""
    before = words(spoken)[-(KNOWLEDGE_RUN - 1) :]
    said = before + words(piece)
    seen = words(knowledge)
    grams = {tuple(seen[i : i + KNOWLEDGE_RUN]) for i in range(len(seen) - KNOWLEDGE_RUN + 1)}
    starts = range(max(0, len(before) - KNOWLEDGE_RUN + 1), len(said) - KNOWLEDGE_RUN + 1)
    return any(tuple(said[i : i + KNOWLEDGE_RUN]) in grams for i in starts)


def off_the_rails(piece: str, messages: Sequence[ChatMessage], spoken: str = "") -> str | None:
    """Why a cleaned piece of a reply should not be spoken, or None when it may be.

    Off the rails: the chat template's markers or role names leaking out, the model speaking as an AI
    assistant instead of the persona, code, a word stuck on repeat, the instructions of the system
    prompt read back (word for word or in other words), a long stretch of the persona's knowledge
    recited (``spoken``: what of the reply went before), the visitor's facts taken for its own, numbers or
    names of its own life that nothing in the prompt holds (made up), or the visitor's words read back.
    """
    if _TEMPLATE_LEAK.search(piece):
        return "template markers"
    if _OUT_OF_CHARACTER.search(piece):
        return "out of character"
    if _CODE.search(piece):
        return "code"
    if _STUCK.search(piece):
        return "stuck on repeat"
    parts = prompt_parts(messages)
    said = words(piece)
    if any(_INSTRUCTION_WORDS.intersection(run) for run in shared_runs(piece, parts.instructions)):
        return "reads back the system prompt"
    if len(said) >= PARROT_WORDS and words(parts.instructions)[: len(said)] == said:
        return "reads back the system prompt"  # its opening ("You are Eileen Collins," a first piece)
    if len(_ORDER_WORDS.intersection(said)) >= ORDER_WORDS_MIN and shared_runs(
        piece, parts.instructions, PARAPHRASE_RUN
    ):
        return "reads back the system prompt"
    if parts.knowledge and recites(piece, parts.knowledge, spoken):
        return "recites its knowledge"
    if claimed_visitor_note(piece, parts.visitor_notes) is not None:
        return TAKES_VISITOR_FACTS
    if invented_specifics(piece, messages):
        return INVENTS
    asked = words(parts.question)
    opening = len(said) >= PARROT_WORDS and asked[: len(said)] == said  # a first piece is cut before a phrase
    if said and (said == asked or opening or (len(said) >= ECHO_WORDS and _within(said, asked))):
        return REPEATS_QUESTION  # whole, its opening, or a long stretch of it
    return None


# A sentence a speaker stops in the middle of ends on a word that cannot end one, or trails off.
_DANGLING = frozenset(
    "and or but so because if that which who whose whom when where while than the a an to of in on at for "
    "with about from into by is are was were am be been my your our their his her its um uh er erm like "
    "wondering mean".split()
)


def unfinished(text: str) -> bool:
    """Whether the visitor stopped in the middle of a sentence ("Um, so I was wondering", "What I
    really wanted to ask is"): what they said trails off, or ends on a word no sentence ends on."""
    text = text.strip()
    if not text or text.endswith(("?", "!")):
        return False
    if text.endswith(("...", "\u2026", "-", "\u2013", "\u2014", ",")):
        return True
    said = words(text)
    return bool(said) and said[-1] in _DANGLING


TAKES_VISITOR_FACTS = "takes the visitor's facts for its own"
_FIRST_PERSON = (("you are", "i am"), ("you were", "i was"), ("you have", "i have"), ("your", "my"), ("you", "i"))


def _claims(note: str) -> list[str]:
    """How the persona would wrongly state a visitor's note as its own, in lower-case words."""
    own = " ".join(words(note))
    for theirs, mine in _FIRST_PERSON:
        own = re.sub(rf"\b{theirs}\b", mine, own)
    name = re.fullmatch(r"my name is (.+)", own)
    return [own] + ([f"i am {name.group(1)}", f"i'm {name.group(1)}"] if name else [])


def opens_visitor_claim(clause: str, notes: Sequence[str]) -> bool:
    """Whether ``clause`` (three words or more) is how such a claim begins ("I work as a nurse" of "I
    work as a nurse in Leeds"): the sentence is then judged whole, not handed on in pieces."""
    said = " ".join(words(clause))
    return len(said.split()) >= 3 and any(claim.startswith(said) for note in notes for claim in _claims(note))


def claimed_visitor_note(piece: str, notes: Sequence[str]) -> str | None:
    """The visitor's note (said back to them: "Your name is Tomasz.", "You live in Accra.") that
    ``piece`` states as the persona's own ("My name is Tomasz", "I'm Tomasz", "I live in Accra"), if any:
    a small model answers "Where do I live?" in the words of the question."""
    said = " ".join(words(piece))
    for note in notes:
        if any(re.search(rf"\b{re.escape(claim)}\b", said) for claim in _claims(note)):
            return note
    return None


INVENTS = "invents facts of its own life"
# A claim about the persona's own life: the piece speaks in the first person ("I", "my", "we", "our").
_OWN_LIFE = re.compile(r"\b(?:I|I'm|I've|I'd|I'll|[Mm]y|[Mm]e|[Mm]ine|[Ww]e|[Oo]ur|[Oo]urs)\b")
# Taste and opinion are small talk, free like world knowledge ("My favourite planet is Saturn"); a
# favourite of its past ("My favourite book as a child was …") is a fact of its life, not free.
_OPINION = re.compile(
    r"\b(?:I (?:think|believe|guess|suppose|imagine|hope|love|like|enjoy|prefer|adore|admire|would|could)|"
    r"[Mm]y favou?rite\b(?!.*\bwas\b)|I'd (?:say|love|like|guess|think))\b"
)
# The specifics a small model invents: numbers (years, ages, counts, prices) and the names it gives the
# people and animals of its life ("My mother's name was Olav", "a dog called Fyr", "My husband is Lars").
# Other capitalised words are left alone: "I looked down at the Earth" names the world, not made-up kin.
_NUMBER = re.compile(r"(?<![\w.])\d[\d,.]*\b")
_GIVEN_NAME = re.compile(
    r"\b(?:named|called|name (?:is|was)|[Mm]y (?:\w+ ){0,2}(?:is|was|were|are))\s+([A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*)*)"
)
_NOT_NAMES = frozenset("i i'm i've i'd i'll god".split())
# Whose name it is: "my mother's name is …", "my dog is …", "a cat named …" (the word before the name).
_WHOSE = re.compile(
    r"\b(?:[Mm]y|[Aa]n?|[Oo]ur)\s+(?:\w+\s+)?(?!(?:is|was|name|named|called)\b)([a-z]+)(?:['’]s)?\s+"
    r"(?:name\s+)?(?:(?:is|was)\s+)?(?:is|was|named|called)\s*$"
)
# Words a fact may tie a name to a relation with: "I married Olav" gives the husband's name.
_RELATION_WORDS = {
    **dict.fromkeys(("husband", "wife", "spouse", "partner"), ("husband", "wife", "spouse", "partner", "married")),
    **dict.fromkeys(("mother", "mum", "mom"), ("mother", "mum", "mom")),
    **dict.fromkeys(("father", "dad"), ("father", "dad")),
}
# A title it claims ("I loved 'The Great Gatsby'"), and the author it names ("by F. Scott Fitzgerald").
_TITLE = re.compile(r"[\"“'‘]([A-Z][^\"”’]{2,60})[\"”'’]")
_AUTHOR = re.compile(r"\bby\s+((?:[A-Z][\w'’-]*\.?\s*){1,4})")


def _whose(piece: str, name_at: int) -> str | None:
    """The relation a given name in ``piece`` (starting at ``name_at``) is claimed for, if it says."""
    found = _WHOSE.search(piece[:name_at])
    return found.group(1).lower() if found else None


def _tied(name: str, relation: str, sentences: Sequence[list[str]]) -> bool:
    """Whether a sentence of the prompt names ``name`` together with ``relation`` (or a word for it)."""
    ties = set(_RELATION_WORDS.get(relation, (relation,)))
    ties |= {f"{t}s" for t in ties}
    return any(name in said and ties.intersection(said) for said in sentences)


def invented_specifics(piece: str, messages: Sequence[ChatMessage]) -> list[str]:
    """The numbers, names and titles that ``piece``, a claim about the persona's own life, states and no
    message of the prompt holds (its instructions, knowledge, the conversation, the question): made up.
    A name the prompt holds is made up too when it is given for someone (or something) else: "my
    mother's name is Olav" when the facts say "I married Olav". Empty for a piece that is not such a
    claim (the world, the visitor, an opinion: free)."""
    if not _OWN_LIFE.search(piece) or _OPINION.search(piece):
        return []
    prompt = " ".join(m.content for m in messages)
    given = set(words(prompt))
    sentences = [words(s) for m in messages for s in split_sentences(m.content)]
    asked = prompt_parts(messages).question
    # Numbers worked out from the question's own ("I have 3 apples and buy 4 more" → "I have 7") are sums.
    found = [] if len(_NUMBER.findall(asked)) >= 2 else [m.group(0) for m in _NUMBER.finditer(piece)]
    for m in _GIVEN_NAME.finditer(piece):
        names = m.group(1).split()
        relation = _whose(piece, m.start(1))
        known = all(re.sub(r"['’]s$", "", n.lower()).rstrip(".,") in given for n in names)
        if known and relation and not _tied(names[0].lower().rstrip(".,"), relation, sentences):
            found += [f"{names[0]} (not its {relation})", *names[1:]]
        else:
            found += names
    for m in (*_TITLE.finditer(piece), *_AUTHOR.finditer(piece)):
        found += [w for w in m.group(1).split() if w[:1].isupper()]
    invented = []
    for specific in found:
        if specific.endswith(")"):  # a known name given for another relation
            invented.append(specific.split(" (", 1)[0])
            continue
        key = re.sub(r"['’]s$", "", specific.lower()).rstrip(".,")
        if key and key not in _NOT_NAMES and key not in given and key.replace(",", "") not in given:
            invented.append(specific)
    return list(dict.fromkeys(invented))


def _within(part: list[str], whole: list[str]) -> bool:
    """Whether ``part`` appears in ``whole`` as a run of consecutive words."""
    n = len(part)
    return any(whole[i : i + n] == part for i in range(len(whole) - n + 1))


def usable_piece(piece: str, messages: Sequence[ChatMessage], spoken: str = "") -> bool:
    """A cleaned piece worth speaking (after ``spoken``): it has words and is not off the rails."""
    return any(ch.isalpha() for ch in piece) and off_the_rails(piece, messages, spoken) is None
