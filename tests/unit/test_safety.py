"""Safety rules: what must alert staff, what must not, and that nothing can break them.

The example messages here are deliberately worded differently from the phrases in
``nlu/safety/rules.yml`` where possible, so these tests check that the rules generalise
(typos, slang, text-speak, emoji, capitals, both a young person's and an adult's register)
rather than that they memorise their own phrase list.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from bot.errors import ConfigError
from nlu.safety import DEFAULT_RULES_PATH, SafetyRules
from nlu.safety.gate import required_words
from nlu.types import Level, Urgency, max_level


@pytest.fixture(scope="module")
def rules() -> SafetyRules:
    return SafetyRules.load()


# ---------------------------------------------------------------------------------------------
# Must be IMMEDIATE: danger now or within hours, self-harm or suicide now.

IMMEDIATE = [
    # from a young person: text-speak, no punctuation, typos
    "hes outside my house rn",
    "hurting myself right now",
    "cutting myself rn",
    "just took the whole packet",
    "i took my mums sleeping tablets",
    "how many would i need so i dont wake up",
    "goodnight forever x",
    "this is the last time you'll ever hear from me",
    "my little sister fell off the climbing frame and she isnt moving",
    "he's coming to get me tonight",
    "im gonna kill myself",
    "i cut myself",
    "taken too many pills",
    "kms",
    "want to die",
    "cant go on",
    "sum1 is following me",
    "he said hell pick me up after school",
    "locked in",
    "he won't let me leave",
    "help me please",
    "SOS",
    "he has a knife",
    "HELPPPP",
    "pls help me hes here",
    "theres a guy standing outside our front door n he wont go away",
    "my stepdad locked me in my room and i cant get out",
    "I just took a whole packet of paracetamol",
    "i swallowed like 20 of my mums tablets",
    "i keep cutting my arms and its bleeding loads",
    "I don't want to be alive anymore",
    "i wanna end it all 2nite",
    "thinking of ending my life",
    "im gonna unalive myself",
    "my friend is on the bridge and she says shes going to jump",
    "someone is trying to break into our flat",
    "i think some1 is following me home from the bus stop",
    "he's got a 🔪",
    "🆘🆘🆘",
    "PLEASE HELP HE IS IN MY ROOM",
    "he is touching me right now what do i do",
    "hes threatening me with a knife",
    "a boy at my school has a gun in his bag",
    "i'm hiding in the bathroom from my mums boyfriend",
    "a man I met on snapchat is picking me up at 8",
    "im meeting a guy from insta later, he said not to tell my mum",
    "someone please call the police he's hurting her",
    "ring 999 now!!",
    "Im standing on the edge of the roof",
    "i am about to take all my antidepressants",
    "i overdosed on my meds an hour ago",
    "I want to dieeee",
    "i rly wanna kill myselfff",
    "h\u200bes outside my h\u200bouse",  # zero-width spaces inside words
    "ＨＥＬＰ ＭＥ",  # full-width letters
    "she's 14 and going to a guys flat tonight, he's 30",
    # from an adult or a professional: full sentences
    "a man in a car is waiting for her outside the school",
    "she's in a car with older men now",
    "a girl of about 13 was taken into room 12 by two men ten minutes ago",
    "I'm a taxi driver and I've just dropped a young girl at an address with an older man",
    "the child is alone with him now",
    "A man is dragging a girl into a van on my street.",
    "My 14 year old daughter is in a car with two men she doesn't know.",
    "A man just grabbed a kid and pulled him into his car.",
    "My daughter has gone off with a much older man and isn't answering her phone.",
    "There are three men in the hotel room with a young girl, she looks about 12.",
    "My neighbour's partner is drunk and smashing the house up, the kids are inside.",
    "A pupil told me her mum's boyfriend is collecting her from school today, she is terrified.",
    "My son says he is going to hurt himself tonight.",
    "My daughter has texted me saying goodbye and that she has taken pills.",
    "I can hear a child screaming next door and a man shouting, it sounds like he's hurting her",
    "I've just seen a teenage girl being bundled into a black car outside the station",
    "he's driving me somewhere and won't tell me where",
    # indirect, or about drink, drugs and the body
    "i'm at a party and a guy keeps trying to take me upstairs",
    "someone put something in my drink and i feel weird",
    "my friend collapsed after taking something",
    "i dont think ill be here tomorrow",
    "im walking home and a van has been behind me for ages",
    "she left with a man from tiktok an hour ago",
    "i'm going to the hotel to meet him tonight",
    "i'm not safe right now",
    "this man keeps touching me on the bus",
    "my dad is picking me up later and im scared",
    "i want to stop existing",
    "she says she's going to throw herself in the river",
    "please come quickly he's going to hurt the baby",
    "two men just shoved my little brother into a black corsa",
    "i have five minutes until they get here",
    "please tell my dad i love him",
    "kms the pain wont stop",
    "kms tonight i mean it",
    "im going to take all my tablets tonight",
    "the noose is ready and so am i",
    "he kidnapped me and i am in his car",
    "i lost my streak and i want to kill myself tonight",
    "i wrapped a belt round my neck",
    "sat in my room with a blade",
    "ive given away all my stuff so they have it after",
    "i will be gone before sunrise",
    "they gave her something and she cannot stand up",
    "ive got the belt round my neck",
    "cut really deep this time",
    "help my dads got my mum by the throat in the kitchen",
    "were locked in the back of a van",
    "gonna walk in front of a bus on the way home",
    "been stockpiling my meds for weeks",
    "a child is on the wrong side of the bridge railings",
    "theres a little kid wandering on the dual carriageway",
    "its not a cry for help this time, i mean it",
    "ill be dead soon anyway",
    "everyone will be happier without me",
    "i cant remember how i got here and my phones nearly dead",
    "a man on my bus is touching a young girl",
    "my dad will kill me when he gets in, last time he broke my wrist",
    "had enough, walking up to the viaduct",
    "theres a man outside mending the fence and hes staring at me, im scared",
    "i cut myself and theres blood everywhere but im fine",
    "theres a man outside my house, its just the postman but he keeps staring at me",
    "downed the whole strip of my nans co-codamol",
    "how long does it take for 30 paracetamol to work",
    "took 12 paracetamol",
    "giving all my stuff away today",
    "left my xbox to my brother and my phone to my best mate",
    "can someone tell my dad sorry",
    "if i dont reply its cos ive done it",
    "she was kidnapped at the party",
    "they are holding her hostage at a party in dewsbury",
    "im being followed by a man in a car",
    "she posted a goodbye video on snap",
    "if i dont come to the park in 20 mins hes posting my pics",
    "mums boyfriend has kicked off on my little sister",
    "hes got the belt out",
    "the boy next door is getting battered by his dad right now",
]

# ---------------------------------------------------------------------------------------------
# Must be HIGH (an alert, but not a 999 emergency): abuse disclosed, grooming, exploitation,
# missing, and danger that is over.

HIGH = [
    "my uncle used to touch me when i was little",
    "years ago when I was little something happened",
    "he keeps asking me to send him pics of me in my underwear",
    "this guy says he'll post my nudes unless I pay him £200",
    "my 15 year old keeps coming home with new clothes and a phone she can't explain",
    "older boys give her weed and take her to flats in another town",
    "my son hasn't been home since friday",
    "my friend ran away from her foster home",
    "my step dad hits me when hes drunk",
    "he said he'd kill me if i told anyone",
    "I tried to kill myself last year",
    "i used to self harm",
    "a man on roblox asked how old i am and told me to keep our chats secret",
    "he sent me a pic of his privates",
    "someone is blackmailing me with my photos",
    "I was raped at a party",
    "my brothers friends make me do stuff to them",
    "he gives me vodka and then wants me to do things",
    "I think my neighbour's 14 year old is being used to sell drugs.",
    "my mums boyfriend comes into my bedroom at night",
    "kicked out by my parents and got nowhere to sleep",
    "when i was 12 he locked me in the shed",
    "My daughter (15) is seeing a man of 26 who buys her alcohol.",
    "He is 25 and she is 14, they talk every night on snap.",
    "my coach touches me and says its our secret",
    "i owe the olders money and they said they'll stab me",
    "he wants me to video call him with no clothes on",
    "my teacher sends me messages on insta late at night",
    "my daughter's boyfriend is 24 and she is 15",
    "someone keeps watching me from a car outside school every day",
    "these boys make me deliver packages",
    "my son goes missing every weekend and comes back with money",
    "i get beaten at home",
    "he pays me to send him pictures",
    "the police brought my sister home after she ran off again",
    # A bare "help" may be a question about the bot or a child who cannot say more: a person
    # checks (HIGH). Stretched ("HELPPP") or with "me"/"please" it is IMMEDIATE (see above).
    "help",
    "help!!!",
]

# ---------------------------------------------------------------------------------------------
# Must be NONE: figurative speech, everyday life, questions about the service, greetings.

NONE = [
    "this homework is killing me",
    "that movie where the boy gets kidnapped was so good",
    "had a nightmare that i was being chased",
    "our puppy keeps following me everywhere",
    "kms if i have to listen to that song again",
    "someone's at the door, probably the delivery",
    "we're doing a presentation on grooming in pshe",
    "the traffic is not moving at all",
    "ate the whole box of chocolates",
    "took the whole box of cereal to my room lol",
    "i'm dying of laughter 😂",
    "we killed it at football today",
    "the exam killed me",
    "I could murder a pizza right now",
    "I'm dead 💀",
    "how do i kill the process in python",
    "dead tired after practice",
    "what happens if I report",
    "is this anonymous?",
    "hi",
    "hello",
    "hey there",
    "good morning",
    "my mum will kill me if i'm late",
    "my dad is picking me up after school",
    "my mum won't let me go out tonight",
    "I want to die my hair blue lol",
    "i can't go on the school trip",
    "he keeps following me on tiktok",
    "can you help me with my report?",
    "who will see my report?",
    "do you call the police if I tell you something?",
    "what counts as grooming?",
    "how long does it take to get a reply",
    "thanks for listening",
    "i hurt myself playing football",
    "i cut my finger on a piece of paper",
    "I nearly died laughing at that video",
    "my phone is dying",
    "my goldfish died",
    "my little brother is so annoying he keeps taking my stuff",
    "we're going to the cinema later with my friends",
    "I'm meeting my friends at the park after school",
    "my sister is picking me up from training",
    "I'm going to a party tonight",
    "that joke killed me 💀💀",
    "i shot my shot with my crush",
    "my dog ran away yesterday",
    "I am missing my mum",
    "my phone is missing",
    "she's missing her bus",
    "i'm scared of spiders",
    "i have a question about how this works",
    "is this a real person or a bot?",
    "killing time before class",
    "my feet are killing me after the walk",
    "my mom is gonna kill me when she sees my grades",
    "Can I stay anonymous if I tell you about my friend?",
    "How do I delete my report?",
    "I need to report something that happened to a friend",
    "Will the police be told who I am?",
    "ok thank u",
    "lol",
    "we learned about county lines in pshe",
    "What are the signs of grooming?",
    "my uncle is picking me up from the airport",
    "i'm safe now thanks",
    "my husband is picking up our daughter",
    "i burnt myself on the oven",
    "my mum won't let me leave the house until i've cleaned my room",
    "i'm home alone tonight",
    "we used a knife in food tech",
    "the girl was taken into care last year",
    "ugh double maths, kill me now",
    "i died in fortnite again",
    "my boyfriend is meeting me after school",
    "my mum dragged me to the shops",
    "i was so embarrassed i wanted to die",
    "my brother is driving me to school tomorrow",
    "kms this homework is never ending",
    "overdosed on chocolate over christmas",
    "the gp said take all the antibiotics until the course is finished",
    "the rope swing over the river is ready",
    "if i have to hear that song again i'll kill myself lol",
    "lost my snapstreak kms",
    "i got kidnapped by a dragon in minecraft",
    "our class watched a film about child sexual exploitation",
    "i will be gone by tomorrow on a school trip to france",
    "no one will find me when we play sardines",
    "my school tie is round my neck all day and it itches",
    "the headphones cable is round my neck",
    "ill be dead soon if mum sees my report lol",
    "he held the guitar by the neck of it",
    "im going to stand in front of the class for my talk",
    "saving up my pocket money for a new phone",
    "my sister is on the motorway driving to leeds",
    "my mum is going to kill me, i broke her favourite mug",
    "had enough of revision, going to the bridge to meet my mates",
    "doing macbeth for english, why does lady macbeth kill herself",
    "theres a man outside mowing the grass next door",
    "a van is outside delivering the new fridge",
    "scraped my elbow on the wall, blood everywhere but im ok",
    "took 2 paracetamol for my headache",
    "giving my old clothes away to charity",
    "tell my mum sorry im late",
    "if i dont get home in 10 mins my mum will ground me",
    "he took his belt off to go through security",
    "getting battered by my brother at fifa right now",
    "theres a man outside rn but its just the amazon guy lol",
    "my cousin got hit by a car when she was 5 but shes fine now",
    "we watched a video about a girl who got groomed online in pshe",
    "police brought a knife bin into school to talk about knife crime",
    "the dog is hiding under my bed cos of the fireworks",
    "sliced my thumb chopping onions, blood everywhere lol",
    "theres a man outside in a van but its just the parcel man",
    "i think im being followed by a pigeon",
    "being held hostage at my cousins wedding, its been 6 hours",
]

# NONE or ROUTINE: a worry, but nothing specific. Not an alert.
ROUTINE_AT_MOST = [
    "I'm worried about my friend",
    "something is not right with the girl next door",
    "i'm being bullied at school",
    "he sends me weird messages",
]

# Danger that is over: an alert (HIGH), but not a 999 emergency.
PAST_NOT_IMMEDIATE = [
    "years ago when I was little something happened",
    "when i was 12 he locked me in the shed",
    "I tried to kill myself last year",
    "i used to cut myself when i was younger",
    "as a kid a man dragged me into his car",
]


@pytest.mark.parametrize("text", IMMEDIATE)
def test_immediate(rules: SafetyRules, text: str) -> None:
    urgency = rules.assess(text)
    assert urgency.level is Level.IMMEDIATE, (text, rules.normalise(text), urgency)
    assert urgency.score == pytest.approx(0.97)
    assert urgency.escalate
    assert urgency.reasons and all(r.startswith("rule:") for r in urgency.reasons)


@pytest.mark.parametrize("text", HIGH)
def test_high(rules: SafetyRules, text: str) -> None:
    urgency = rules.assess(text)
    assert urgency.level is Level.HIGH, (text, rules.normalise(text), urgency)
    assert urgency.score == pytest.approx(0.85)
    assert urgency.escalate
    assert urgency.reasons and all(r.startswith("rule:") for r in urgency.reasons)


@pytest.mark.parametrize("text", NONE)
def test_none(rules: SafetyRules, text: str) -> None:
    urgency = rules.assess(text)
    assert urgency.level is Level.NONE, (text, rules.normalise(text), urgency)
    assert urgency.score == 0.0
    assert urgency.reasons == ()
    assert not urgency.escalate


@pytest.mark.parametrize("text", ROUTINE_AT_MOST)
def test_routine_at_most(rules: SafetyRules, text: str) -> None:
    urgency = rules.assess(text)
    assert urgency.level in (Level.NONE, Level.ROUTINE), (text, urgency)
    assert not urgency.escalate


@pytest.mark.parametrize("text", PAST_NOT_IMMEDIATE)
def test_past_events_are_high_not_immediate(rules: SafetyRules, text: str) -> None:
    urgency = rules.assess(text)
    assert urgency.level is Level.HIGH, (text, urgency)
    assert urgency.escalate  # still an alert to the on-call team


# Known limits of phrase rules, kept here so they are visible (and so a fix shows up as XPASS).
# Hyperbole is escalated on purpose: a rule cannot tell "I'll kill myself lol" from a real plan,
# and missing a real one costs more than a false alarm. Only a groan straight after an everyday
# hassle ("this song... kms lol", "lost my streak kms") is taken out.
KNOWN_LIMITS = [
    ("i literally want to die, we have a test tomorrow", Level.NONE),
    ("sos i forgot my pe kit", Level.NONE),
    ("our teacher locked us in the classroom for detention jk", Level.NONE),
    ("my brother keeps hitting me with his pillow lol", Level.NONE),
    ("the news said a child went missing in another town", Level.NONE),
    ("ive decided tonight is the night", Level.IMMEDIATE),
    ("he said if i don't come outside he'll come in", Level.IMMEDIATE),
]


@pytest.mark.xfail(reason="known limit of phrase rules; see KNOWN_LIMITS", strict=False)
@pytest.mark.parametrize(("text", "expected"), KNOWN_LIMITS)
def test_known_limits(rules: SafetyRules, text: str, expected: Level) -> None:
    assert rules.assess(text).level is expected


def test_past_marker_does_not_hide_present_danger(rules: SafetyRules) -> None:
    text = "when i was little he hurt me and now hes outside my house"
    assert rules.assess(text).level is Level.IMMEDIATE


def test_example_lists_are_big_enough() -> None:
    assert len(IMMEDIATE) >= 40
    assert len(HIGH) >= 15
    assert len(NONE) >= 40


def test_examples_are_not_copies_of_phrases(rules: SafetyRules) -> None:
    """Most examples must not simply be one of the reviewed phrases."""
    phrases = {rules.normalise(p) for rule in rules.rules for p in rule.phrases}
    examples = IMMEDIATE + HIGH
    copies = [e for e in examples if rules.normalise(e) in phrases]
    assert len(copies) <= len(examples) // 5, copies


# ---------------------------------------------------------------------------------------------
# Result shape, reasons and ordering


def test_reasons_name_every_matching_rule_sorted_by_level_then_id(rules: SafetyRules) -> None:
    text = "he's outside my house with a knife, he used to touch me, i want to die"
    urgency = rules.assess(text)
    assert urgency.level is Level.IMMEDIATE
    found = rules.matches(text)
    assert [m.reason for m in found] == list(urgency.reasons)
    keys = [(-m.level.rank, m.rule_id) for m in found]
    assert keys == sorted(keys)
    ids = {m.rule_id for m in found}
    assert {"danger_now", "suicidal_intent", "sexual_abuse_disclosure"} <= ids


def test_to_json(rules: SafetyRules) -> None:
    data = rules.assess("im gonna kill myself").to_json()
    assert data == {"level": "immediate", "score": 0.97, "reasons": ["rule:suicidal_intent"]}
    assert rules.assess("hello").to_json() == {"level": "none", "score": 0.0, "reasons": []}


def test_levels_are_ordered() -> None:
    order = [Level.NONE, Level.ROUTINE, Level.HIGH, Level.IMMEDIATE]
    assert [level.rank for level in order] == [0, 1, 2, 3]
    assert max_level(Level.HIGH, Level.IMMEDIATE, Level.NONE) is Level.IMMEDIATE
    assert max_level(Level.ROUTINE) is Level.ROUTINE
    assert [lv.escalate for lv in order] == [False, False, True, True]


def test_urgency_merge_only_raises() -> None:
    high = Urgency(Level.HIGH, 0.85, ("rule:a",))
    low = Urgency(Level.ROUTINE, 0.4, ("model",))
    assert high.merge(low).level is Level.HIGH
    assert low.merge(high).level is Level.HIGH
    assert high.merge(low).reasons == ("rule:a", "model")
    assert Urgency.nothing().merge(Urgency.nothing()).level is Level.NONE


def test_normalisation(rules: SafetyRules) -> None:
    assert rules.normalise("Hes outside my house RN!!!") == "he is outside my house right now"
    assert rules.normalise("sum1 is following me 😭") == "someone is following me"
    assert rules.normalise("I\u2019m g\u200bonna  kms") == "i am going to kill myself"
    assert rules.normalise("my mum's car") == "my mums car"


# ---------------------------------------------------------------------------------------------
# A rule can only raise: the full rule set never gives less than any single rule.

ALL_EXAMPLES = IMMEDIATE + HIGH + NONE + ROUTINE_AT_MOST + PAST_NOT_IMMEDIATE


def test_a_rule_can_only_raise(rules: SafetyRules) -> None:
    singles = {rule.id: rules.subset([rule.id]) for rule in rules.rules}
    for text in ALL_EXAMPLES:
        overall = rules.assess(text)
        for rule_id, single in singles.items():
            alone = single.assess(text)
            assert alone.level.rank <= overall.level.rank, (text, rule_id)
            if alone.level is not Level.NONE:
                assert f"rule:{rule_id}" in overall.reasons, (text, rule_id)
        for match in rules.matches(text):
            assert match.level.rank <= overall.level.rank


def test_subset_rejects_unknown_rule(rules: SafetyRules) -> None:
    with pytest.raises(KeyError):
        rules.subset(["no_such_rule"])


def test_word_gates_never_hide_a_match(rules: SafetyRules) -> None:
    """Every regex skipped by its word gate would indeed not have matched."""
    for text in ALL_EXAMPLES:
        for padded, words in rules._prepare(text):
            for compiled in rules._rules:
                for branch in compiled.branches:
                    if branch.gate is not None and branch.gate.isdisjoint(words):
                        assert branch.regex.search(padded) is None, (text, branch.regex.pattern)


def test_word_gates_never_hide_a_match_random_text(rules: SafetyRules) -> None:
    """The same, on random text made of the rules' own words and phrases."""
    rng = random.Random(2024)
    phrases = [rules.normalise(p) for rule in rules.rules for p in rule.phrases if "{" not in p]
    vocabulary = sorted({w for p in phrases for w in p.split()} | {"he", "is", "my", "a", "man"})
    texts = []
    for _ in range(400):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(1, 14))]
        if rng.random() < 0.5:
            words.insert(rng.randint(0, len(words)), rng.choice(phrases))
        texts.append(" ".join(words))
    for text in texts:
        for padded, words_in_text in rules._prepare(text):
            for compiled in rules._rules:
                for branch in compiled.branches:
                    if branch.gate is not None and branch.gate.isdisjoint(words_in_text):
                        assert branch.regex.search(padded) is None, (text, branch.regex.pattern)


@pytest.mark.parametrize(
    ("regex", "expected"),
    [
        ("(?:is|are) outside", {"outside"}),
        ("(?:a|b)(?: \\w+){0,3} (?:knife|gun)", {"knife", "gun"}),
        ("\\w+ed", None),
        ("(?i:knife)", None),
        ("kill(?:s|ed)? myself", {"myself"}),
        ("(?:(?:he|she) is outside)", {"outside"}),
        ("(?:x )?help", {"help"}),
    ],
)
def test_required_words(regex: str, expected: set[str] | None) -> None:
    got = required_words(regex)
    assert (None if got is None else set(got)) == expected


# ---------------------------------------------------------------------------------------------
# Robustness: assess never raises and stays fast.

WEIRD_INPUTS = [
    "",
    " ",
    "   \t\n  ",
    "\u200b",
    "\u200b\u200c\u200d\ufeff",
    "\u202e\u202dhello\u202c",
    "\u202eeveil ot tnaw i",
    "\x00\x01\x02\x1b[31m",
    "\ud800\udfff lone surrogates",
    "😀" * 4096,
    "👨\u200d👩\u200d👧\u200d👦" * 500,
    "a" * 100_000,
    "help " * 20_000,
    "'" * 1000,
    "_" * 1000,
    "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd",
    "\U000e0001\U000e0041 tag characters",
    "ℌ𝔢𝔩𝔭 𝔪𝔢",
    "\n".join(["line"] * 5000),
]


@pytest.mark.parametrize("text", WEIRD_INPUTS, ids=range(len(WEIRD_INPUTS)))
def test_never_raises(rules: SafetyRules, text: str) -> None:
    urgency = rules.assess(text)
    assert isinstance(urgency, Urgency)
    assert "error:safety_rules" not in urgency.reasons


def test_random_control_characters_never_raise(rules: SafetyRules) -> None:
    rng = random.Random(1234)
    alphabet = [chr(c) for c in range(0x00, 0x20)] + [chr(c) for c in range(0x7F, 0xA0)]
    alphabet += ["\u200b", "\u200e", "\u200f", "\u202a", "\u202b", "\u202e", "\u2066", "\ufeff"]
    alphabet += list("help me he is outside ")
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        urgency = rules.assess(text)
        assert "error:safety_rules" not in urgency.reasons


def test_random_unicode_never_raises(rules: SafetyRules) -> None:
    rng = random.Random(99)
    for _ in range(200):
        text = "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 200)))
        assert "error:safety_rules" not in rules.assess(text).reasons


def test_invisible_and_bidi_characters_do_not_hide_danger(rules: SafetyRules) -> None:
    assert rules.assess("i want to\u200b d\u200ci\u200de").level is Level.IMMEDIATE
    assert rules.assess("\u202ehe has a knife\u202c").level is Level.IMMEDIATE
    assert rules.assess("\x00kill\x00myself").level is Level.IMMEDIATE
    assert rules.assess("i want to kíll mysélf").level is Level.IMMEDIATE  # accents
    assert rules.assess("k\u0337i\u0337l\u0337l\u0337 myself").level is Level.IMMEDIATE  # zalgo


def test_internal_error_fails_safe(rules: SafetyRules, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug inside the rules must never silence a message: a person looks at it instead."""

    def broken(text: str) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(rules, "matches", broken)
    urgency = rules.assess("anything")
    assert urgency.level is Level.HIGH
    assert urgency.escalate
    assert urgency.reasons == ("error:safety_rules",)


def test_non_string_input_does_not_raise(rules: SafetyRules) -> None:
    assert rules.assess(None).level is Level.NONE  # type: ignore[arg-type]
    assert rules.assess(12345).level is Level.NONE  # type: ignore[arg-type]


def test_fast_on_a_long_message(rules: SafetyRules) -> None:
    rng = random.Random(7)
    sentence = (
        "i was at school today and my friend said that the teacher was going to give us "
        "more homework tomorrow so we went to the park after lunch and played football"
    )
    words = sentence.split()
    text = " ".join(rng.choice(words) for _ in range(1000))[:4096]
    rules.assess(text)
    runs = 50
    start = time.perf_counter()
    for _ in range(runs):
        rules.assess(text)
    per_message = (time.perf_counter() - start) / runs
    # The aim is well under 1 ms; the bound is loose so slow CI machines do not flake.
    assert per_message < 0.010


# ---------------------------------------------------------------------------------------------
# Loading: the packaged file, and clear errors for a malformed one.


def test_default_rules_load(rules: SafetyRules) -> None:
    assert rules.source == str(DEFAULT_RULES_PATH)
    ids = [rule.id for rule in rules.rules]
    for expected in (
        "danger_now",
        "self_harm_now",
        "suicidal_intent",
        "meeting_planned",
        "sexual_abuse_disclosure",
        "exploitation_signs",
        "online_grooming",
        "runaway_missing",
    ):
        assert expected in ids
    assert len(ids) == len(set(ids))
    for rule in rules.rules:
        assert rule.description
        assert rule.phrases or rule.patterns


GOOD = """\
version: 1
normalise:
  rn: right now
words:
  who: [he, she]
rules:
  - id: test_rule
    level: immediate
    description: a test
    phrases:
      - help me
      - "{who} is outside"
    patterns:
      - match: 'knife (?:now|{who})'
        why: a test pattern
not_danger:
  phrases:
    - help me with
"""


def _write(tmp_path: Path, text: str, name: str = "bad_rules.yml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(needle)


def test_small_rules_file_loads(tmp_path: Path) -> None:
    loaded = SafetyRules.load(_write(tmp_path, GOOD, "good.yml"))
    assert loaded.assess("she is outside rn").level is Level.IMMEDIATE
    assert loaded.assess("knife now").reasons == ("rule:test_rule",)
    assert loaded.assess("help me with maths").level is Level.NONE
    assert loaded.assess("help me").level is Level.IMMEDIATE


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        ("level: immediate", "level: urgent", "level: urgent", "unknown level"),
        ("level: immediate", "level: none", "level: none", "unknown level"),
        ("      - help me\n", "      - help me\n      - ''\n", "- ''", "empty"),
        ("      - help me\n", "      - '!!!'\n", "'!!!'", "empty"),
        ("'knife (?:now|{who})'", "'knife (?:now|{who}'", "match: 'knife", "does not compile"),
        ("'knife (?:now|{who})'", "'(?:knife)?'", "match: '(?:knife)?'", "matches empty"),
        ("'knife (?:now|{who})'", "'knife)|(now'", "match: 'knife)|(now'", "does not compile"),
        ("'knife (?:now|{who})'", "'he''s here'", "match: 'he''s", "apostrophes"),
        ("'knife (?:now|{who})'", "'^knife'", "match: '^knife'", "whole_message"),
        (
            "    description: a test\n",
            "    description: a test\n    colour: red\n",
            "colour",
            "unknown key",
        ),
        ("version: 1\n", "version: 1\nextra: thing\n", "extra: thing", "unknown key"),
        (
            "        why: a test pattern\n",
            "        why: a test pattern\n        when: now\n",
            "when: now",
            "unknown key",
        ),
        (
            '      - "{who} is outside"',
            '      - "{whom} is outside"',
            "{whom}",
            "unknown word list",
        ),
        (
            "  rn: right now\n",
            "  rn: right now\n  rn: really now\n",
            "rn: really now",
            "duplicate key",
        ),
        ("version: 1", "version: 2", "version: 2", "unsupported version"),
        (
            "    phrases:\n      - help me\n",
            "    phrases: help me\n",
            "phrases: help me",
            "must be a list",
        ),
    ],
)
def test_malformed_rules_file(
    tmp_path: Path, old: str, new: str, needle: str, message: str
) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        SafetyRules.load(path)
    error = str(caught.value)
    assert "bad_rules.yml" in error
    assert f"line {_line_of(text, needle)}" in error, error
    assert message in error


def test_duplicate_rule_id(tmp_path: Path) -> None:
    rule = GOOD[GOOD.index("  - id: test_rule") : GOOD.index("not_danger:")]
    text = GOOD.replace("not_danger:", rule.replace("help me\n", "help us\n") + "not_danger:")
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        SafetyRules.load(path)
    error = str(caught.value)
    second = [n for n, line in enumerate(text.splitlines(), 1) if "id: test_rule" in line][1]
    assert "bad_rules.yml" in error and f"line {second}" in error and "duplicate rule id" in error


def test_invalid_yaml(tmp_path: Path) -> None:
    text = GOOD.replace("    level: immediate\n", "    level: [immediate\n")
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        SafetyRules.load(path)
    error = str(caught.value)
    assert "bad_rules.yml" in error and "line " in error and "YAML" in error


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a list\n", "version: 1\n"])
def test_empty_or_wrong_shape(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        SafetyRules.load(_write(tmp_path, text))
    assert "bad_rules.yml" in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        SafetyRules.load(tmp_path / "nowhere.yml")
    assert "nowhere.yml" in str(caught.value)


def test_word_lists_that_refer_in_a_circle(tmp_path: Path) -> None:
    text = GOOD.replace("  who: [he, she]\n", "  who: [he, '{whom}']\n  whom: ['{who}']\n")
    with pytest.raises(ConfigError) as caught:
        SafetyRules.load(_write(tmp_path, text))
    assert "circle" in str(caught.value) and "bad_rules.yml" in str(caught.value)
