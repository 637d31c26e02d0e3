"""Row generators of the demo pool's five families (``curator.refdata.demo_pool``): every prompt and response is
composed by this code from parts written for this project, the running interpreter's docstrings, or
computed answers. Each generator maps a seeded ``random.Random`` to one (prompt, response, format) row."""

from __future__ import annotations

import importlib
import inspect
import random
import re
from collections.abc import Callable
from fractions import Fraction

_MODULES = ("math statistics string textwrap itertools functools os.path json re collections heapq bisect "
            "operator shutil fractions difflib base64 calendar copy glob fnmatch html urllib.parse secrets "
            "random datetime unicodedata zlib hashlib shlex").split()
Row = tuple[str, str, str]  # prompt, response, format


# ----------------------------------------------------------------------------- stdlib docstrings


def _stdlib_entries() -> list[tuple[str, str, str, list[str]]]:
    """(qualified name, kind, signature, docstring paragraphs, call) for public documented stdlib callables."""
    entries = []
    for mod_name in _MODULES:
        mod = importlib.import_module(mod_name)
        for name in sorted(dir(mod)):
            obj = getattr(mod, name)
            if name.startswith("_") or not callable(obj):
                continue
            home = (getattr(obj, "__module__", None) or "").lstrip("_")
            if mod_name != "os.path" and home.split(".")[0] != mod_name.split(".")[0]:
                continue
            doc = inspect.getdoc(obj) or ""
            lines = doc.splitlines()
            if lines and re.match(rf"{re.escape(name)}\(.*\)", lines[0]):  # C signature line
                doc = "\n".join(lines[1:]).strip()
            paragraphs = [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]
            if not paragraphs or len(paragraphs[0]) < 30:
                continue
            sig, call = _signature(obj)
            kind = "class" if inspect.isclass(obj) else "function"
            entries.append((f"{mod_name}.{name}", kind, sig, paragraphs[:3], call))
    return entries


def _signature(obj: object) -> tuple[str, str]:
    """(signature text without memory addresses, example call naming the required parameters)."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)", "(...)"
    text = re.sub(r"<(?:built-in )?(?:function|class) '?([\w.]+)'?(?: at 0x[0-9a-f]+)?>", r"\1", str(sig))
    if re.search(r"0x[0-9a-f]{6,}", text):
        text = "(...)"
    required = [p.name for p in sig.parameters.values() if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return text, f"({', '.join(required)})"


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z`])", text) if s]


def _stdlib_row(rng: random.Random, entries: list) -> Row:
    qual, kind, sig, paras, call = rng.choice(entries)
    mod, name = qual.rsplit(".", 1)
    style = rng.randrange(3)
    if style == 0:
        prompt = rng.choice([f"What does the Python {kind} `{qual}` do?", f"Explain `{qual}` from the standard library.",
                             f"I keep seeing `{qual}` in code. What is it for?"])
        body = "\n\n".join(paras[:2])
        return prompt, f"`{qual}{sig}` is a {kind} in the `{mod}` module.\n\n{body}", "prose"
    if style == 1:
        prompt = rng.choice([f"Summarise the documentation of `{qual}` as bullet points, starting with its signature.",
                             f"Give me a bulleted overview of Python's `{qual}`."])
        points = [s for p in paras for s in _sentences(p)][:5]
        bullets = "\n".join(f"- {s}" for s in points)
        return prompt, f"Signature: `{qual}{sig}`\n\n{bullets}", "list"
    prompt = rng.choice([f"Which standard-library module provides `{name}`, and how do I use it?",
                         f"Where does `{name}` live in Python's standard library?"])
    first = _sentences(paras[0])[0]
    usage = f"import {mod}\n{mod}.{name}{call}"
    return prompt, f"`{name}` is provided by the `{mod}` module. {first}\n\n```python\n{usage}\n```", "prose"


# ----------------------------------------------------------------------------- arithmetic


def _money(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"


def _num(x: Fraction | float | int, places: int = 2) -> str:
    return f"{float(x):.{places}f}".rstrip("0").rstrip(".")


_NAMES = "Maya Tom Aisha Luis Priya Ken Sofia Omar Lena Ravi Chloe Mateo".split()
_ITEMS = [("notebook", "notebooks"), ("pen", "pens"), ("apple", "apples"), ("loaf of bread", "loaves of bread"),
          ("ticket", "tickets"), ("plant pot", "plant pots"), ("coffee", "coffees"), ("bus pass", "bus passes")]


def _arithmetic_row(rng: random.Random) -> Row:
    who, kind = rng.choice(_NAMES), rng.randrange(6)
    if kind == 0:
        (a1, a2), (b1, b2) = rng.sample(_ITEMS, 2)
        pa_, pb, na, nb = rng.randrange(50, 900), rng.randrange(50, 900), rng.randrange(2, 9), rng.randrange(2, 9)
        q = (f"One {a1} costs {_money(pa_)} and one {b1} costs {_money(pb)}. {who} buys {na} {a2} and {nb} {b2}. "
             "How much does that cost in total?")
        w = (f"1. {na} × {_money(pa_)} = {_money(na * pa_)}\n2. {nb} × {_money(pb)} = {_money(nb * pb)}\n"
             f"3. Total = {_money(na * pa_)} + {_money(nb * pb)} = {_money(na * pa_ + nb * pb)}")
        return q, f"{w}\n\n**Answer:** {_money(na * pa_ + nb * pb)}", "math"
    if kind == 1:
        price, pct = rng.randrange(20, 400), rng.choice([5, 10, 15, 20, 25, 30, 40])
        off = Fraction(price * pct, 100)
        q = f"A jacket is priced at ${price}. It is discounted by {pct}%. What is the sale price?"
        w = f"Discount = {pct}% × ${price} = {pct}/100 × {price} = ${_num(off)}\nSale price = ${price} − ${_num(off)}"
        return q, f"{w} = ${_num(price - off)}\n\n**Answer:** ${_num(price - off)}", "math"
    if kind == 2:
        vals = [rng.randrange(5, 35) for _ in range(rng.randrange(4, 8))]
        mean = Fraction(sum(vals), len(vals))
        q = f"{who} recorded these daily temperatures in °C: {', '.join(map(str, vals))}. What is the mean temperature?"
        w = f"Sum = {' + '.join(map(str, vals))} = {sum(vals)}\nCount = {len(vals)}\nMean = {sum(vals)} ÷ {len(vals)}"
        return q, f"{w} ≈ {_num(mean)}\n\n**Answer:** about {_num(mean)} °C", "math"
    if kind == 3:
        dist, mins = rng.randrange(30, 600), rng.choice([45, 60, 90, 105, 120, 150, 180, 210, 240])
        speed = Fraction(dist * 60, mins)
        q = f"A train covers {dist} km in {mins} minutes. What is its average speed in km/h?"
        w = f"Time = {mins} ÷ 60 = {_num(Fraction(mins, 60))} h\nSpeed = distance ÷ time = {dist} ÷ {_num(Fraction(mins, 60))}"
        return q, f"{w} ≈ {_num(speed)} km/h\n\n**Answer:** {_num(speed)} km/h", "math"
    if kind == 4:
        w_, h = rng.randrange(2, 30), rng.randrange(2, 30)
        q = f"A rectangular garden is {w_} m long and {h} m wide. What are its area and perimeter?"
        w = f"- Area = length × width = {w_} × {h} = {w_ * h} m²\n- Perimeter = 2 × ({w_} + {h}) = {2 * (w_ + h)} m"
        return q, f"{w}\n\n**Answer:** area {w_ * h} m², perimeter {2 * (w_ + h)} m", "math"
    total, a, b = rng.randrange(2, 50) * 10, rng.randrange(1, 6), rng.randrange(1, 6)
    q = f"{who} and a friend share ${total} in the ratio {a}:{b}. How much does each person get?"
    w = (f"Total parts = {a} + {b} = {a + b}\nOne part = ${total} ÷ {a + b} = ${_num(Fraction(total, a + b))}\n"
         f"- {who}: {a} × that = ${_num(Fraction(total * a, a + b))}\n- Friend: {b} × that = "
         f"${_num(Fraction(total * b, a + b))}")
    return q, f"{w}\n\n**Answer:** ${_num(Fraction(total * a, a + b))} and ${_num(Fraction(total * b, a + b))}", "math"


_UNITS: list[tuple[str, str, str, Callable[[float], float]]] = [
    ("kilometres", "miles", "{v} ÷ 1.609344", lambda x: x / 1.609344),
    ("miles", "kilometres", "{v} × 1.609344", lambda x: x * 1.609344),
    ("kilograms", "pounds", "{v} ÷ 0.45359237", lambda x: x / 0.45359237),
    ("pounds", "kilograms", "{v} × 0.45359237", lambda x: x * 0.45359237),
    ("degrees Celsius", "degrees Fahrenheit", "{v} × 9/5 + 32", lambda x: x * 9 / 5 + 32),
    ("degrees Fahrenheit", "degrees Celsius", "({v} − 32) × 5/9", lambda x: (x - 32) * 5 / 9),
    ("litres", "US gallons", "{v} ÷ 3.785411784", lambda x: x / 3.785411784),
    ("inches", "centimetres", "{v} × 2.54", lambda x: x * 2.54),
    ("feet", "metres", "{v} × 0.3048", lambda x: x * 0.3048),
    ("km/h", "m/s", "{v} ÷ 3.6", lambda x: x / 3.6),
    ("hours", "seconds", "{v} × 60 × 60", lambda x: x * 3600),
    ("mebibytes", "megabytes", "{v} × 1.048576", lambda x: x * 1.048576),
]


def _unit_row(rng: random.Random) -> Row:
    src, dst, expr, fn = rng.choice(_UNITS)
    value = rng.choice([rng.randrange(1, 200), rng.randrange(1, 1000) / 10])
    v, out = _num(value, 1), fn(value)
    q = rng.choice([f"Convert {v} {src} to {dst}.", f"How many {dst} is {v} {src}?",
                    f"What is {v} {src} in {dst}? Show the working."])
    return q, (f"Formula: {dst} = {expr.format(v=src)}\n\nWorking: {expr.format(v=v)} ≈ {_num(out, 3)}\n\n"
               f"**Answer:** {v} {src} ≈ {_num(out, 2)} {dst}"), "math"


# ----------------------------------------------------------------------------- tips and how-tos

_TIPS = {  # topic: tips separated by |
    "keeping houseplants healthy": "Water when the top few centimetres of soil feel dry, not on a fixed "
    "schedule|Use pots with drainage holes so roots never sit in water|Turn each pot a quarter turn every "
    "week for even growth|Wipe dust off broad leaves so they can take in light|Feed lightly in spring and "
    "summer and rarely in winter|Check the undersides of leaves for pests when you water|Group "
    "humidity-loving plants together",
    "studying for an exam": "Split the syllabus into small daily goals|Test yourself instead of rereading "
    "notes|Space reviews of a topic over several days|Explain a concept aloud as if teaching a friend|Work "
    "through past papers under timed conditions|Sleep well the night before; tired recall is weaker|Keep a "
    "list of mistakes and revisit it",
    "writing clear emails": "Put the request or key point in the first two sentences|Use a subject line "
    "that says what the email is about|Keep paragraphs to two or three sentences|Use bullet points for "
    "several questions|State any deadline explicitly|Read it once more before sending and cut what is not "
    "needed",
    "saving money on groceries": "Plan the week's meals before shopping|Shop with a list and stick to "
    "it|Compare unit prices rather than package prices|Buy seasonal fruit and vegetables|Cook larger "
    "batches and freeze portions|Check what is already in the cupboard first|Try store brands for staples",
    "running your first 5 km": "Start with run-walk intervals and lengthen the running parts each week|Run "
    "at a pace where you could still hold a conversation|Add no more than a little distance each week|Rest "
    "at least one day between runs at first|Get shoes that fit well rather than the fanciest pair|Warm up "
    "with five minutes of brisk walking",
    "organising a small home office": "Keep only daily-use items on the desk|Give every cable a labelled "
    "place|Put the monitor top roughly at eye level|Use one inbox tray for loose paper and clear it "
    "weekly|Place the desk near natural light if you can|Store rarely used supplies out of sight",
    "writing readable Python code": "Choose names that say what a value is|Keep functions short and focused "
    "on one job|Write a docstring that states what a function returns|Prefer returning values to mutating "
    "arguments|Run a formatter and a linter automatically|Add a small test for each bug you fix|Avoid deep "
    "nesting by returning early",
    "getting better sleep": "Go to bed and get up at the same times every day|Keep the bedroom cool, dark "
    "and quiet|Avoid caffeine in the late afternoon and evening|Dim screens and lights in the hour before "
    "bed|Get some daylight in the morning|Keep naps short and early",
    "planning a weekend hike": "Check the weather forecast the evening before and again in the morning|Tell "
    "someone your route and expected return time|Carry more water than you think you need|Pack a light "
    "waterproof layer|Download an offline map of the area|Start early to leave daylight in reserve",
    "learning a new language": "Practise a little every day rather than a lot once a week|Learn the most "
    "frequent words first|Listen to slow podcasts or radio in the language|Speak from the first week, even "
    "imperfectly|Keep a notebook of useful phrases|Label objects around your home",
    "running a productive meeting": "Share a short agenda beforehand|Invite only the people who need to "
    "decide|Start and end on time|Write decisions and owners down during the meeting|Leave the last minutes "
    "for next steps|Send a brief summary afterwards",
    "reducing food waste at home": "Store leftovers in clear containers so you see them|Freeze bread you "
    "will not eat within two days|Use the oldest items in the fridge first|Turn vegetable scraps into "
    "stock|Learn the difference between best-before and use-by dates|Buy loose produce in the amounts you "
    "need",
    "taking better phone photos": "Clean the lens before shooting|Tap the subject to set focus and "
    "exposure|Use soft light from a window rather than the flash|Turn on grid lines and use the rule of "
    "thirds|Hold the phone with both hands and breathe out as you shoot|Take a few shots and keep the best",
    "keeping a bicycle in good shape": "Check tyre pressure every week|Clean and lubricate the chain "
    "regularly|Test both brakes before every ride|Listen for new noises and check them early|Keep the bike "
    "indoors or under cover|Tighten loose bolts with the right tool",
    "managing personal time": "Write tomorrow's three priorities before finishing today|Block time in the "
    "calendar for focused work|Batch small tasks such as replies and errands|Say no to requests that do not "
    "fit your goals|Review the week every Friday|Turn off non-essential notifications",
    "cooking rice on the stove": "Rinse the rice until the water runs mostly clear|Measure water by ratio "
    "for your variety|Bring to a boil, then simmer with the lid on|Do not lift the lid while it simmers|Let "
    "it rest off the heat for ten minutes|Fluff with a fork before serving",
}
_HOWTOS = {  # task: steps separated by |
    "back up the photos on my laptop": "Plug in an external drive with enough free space|Create a folder "
    "named with today's date|Copy the photo library into it|Open a few files from the copy to check they "
    "work|Store the drive somewhere other than next to the laptop|Repeat monthly or set up automatic backups",
    "make a simple weekly budget": "List your income for the week|Write down fixed costs such as rent and "
    "travel|Estimate flexible costs like food and fun|Subtract all costs from income|Decide where any "
    "surplus goes, for example savings|Track actual spending and adjust next week",
    "brew pour-over coffee": "Heat water to just off the boil|Rinse the paper filter with hot water|Add "
    "medium-fine ground coffee to the filter|Pour a little water to let the grounds bloom for 30 "
    "seconds|Pour the rest slowly in circles|Serve once the water has drained through",
    "create a Python virtual environment": "Open a terminal in your project folder|Run `python -m venv "
    ".venv`|Activate it with `source .venv/bin/activate` (or `.venv\\Scripts\\activate` on Windows)|Install "
    "packages with `pip install <name>`|Record them with `pip freeze > requirements.txt`|Deactivate with "
    "`deactivate` when done",
    "repot a plant": "Water the plant a day before|Choose a pot slightly larger than the old one|Add a "
    "layer of fresh potting mix|Ease the plant out and loosen circling roots|Set it at the same depth and "
    "fill around it with mix|Water thoroughly and keep out of harsh sun for a few days",
    "prepare for a job interview": "Reread the job description and note the key skills|Research the "
    "organisation's work and recent news|Prepare short stories that show each key skill|Practise answers "
    "aloud|Write two or three questions to ask them|Plan your route and arrive a little early",
    "clean a laptop keyboard": "Shut down the laptop and unplug it|Turn it upside down and tap gently|Use a "
    "soft brush between the keys|Wipe keys with a barely damp microfibre cloth|Let it dry completely before "
    "switching on",
    "start a vegetable patch": "Pick a spot with at least six hours of sun|Clear weeds and loosen the "
    "soil|Mix in compost|Choose a few easy crops such as lettuce and beans|Sow or plant at the spacing on "
    "the packet|Water regularly and mulch to keep moisture",
}
_TIP_ASKS = ["Give me {k} tips for {t}.", "What are {k} practical tips for {t}?", "List {k} quick tips on {t}.",
             "I'd like some advice on {t}. Can you give me {k} pointers as a bulleted list?"]
_HOW_ASKS = ["How do I {t}?", "Give me step-by-step instructions to {t}.", "What are the steps to {t}?",
             "Can you walk me through how to {t}?"]


def _tips_row(rng: random.Random) -> Row:
    if rng.random() < 0.75:
        topic = rng.choice(sorted(_TIPS))
        bank = _TIPS[topic].split("|")
        k = rng.randrange(3, len(bank) + 1)
        picks = rng.sample(bank, k)
        intro = rng.choice([f"Here are {k} tips for {topic}:", f"{k} practical tips:", "Try these:"])
        return rng.choice(_TIP_ASKS).format(k=k, t=topic), intro + "\n\n" + "\n".join(f"- {p}." for p in picks), "list"
    task = rng.choice(sorted(_HOWTOS))
    steps = _HOWTOS[task].split("|")
    lines = "\n".join(f"{i}. {s}." for i, s in enumerate(steps, 1))
    outro = rng.choice(["", "\n\nThat's it.", f"\n\nIn short: {steps[0].lower()}, then work through the rest in order."])
    return rng.choice(_HOW_ASKS).format(t=task), f"Here is how to {task}:\n\n{lines}{outro}", "steps"


# ----------------------------------------------------------------------------- rewriting and summarising

_SUBJECTS = ["the gardener", "a volunteer", "our team", "the chef", "the committee", "my neighbour", "the students",
             "the engineer", "the librarian", "a local artist", "the new intern", "the city council"]
_VERBS = {  # verb: (past, participle, objects as (text, plural))
    "plant": ("planted", "planted", [("the roses", True), ("an apple tree", False)]),
    "write": ("wrote", "written", [("the report", False), ("two short poems", True)]),
    "repair": ("repaired", "repaired", [("the fence", False), ("the old bicycles", True)]),
    "paint": ("painted", "painted", [("the kitchen wall", False), ("the garden chairs", True)]),
    "bake": ("baked", "baked", [("a lemon cake", False), ("the bread rolls", True)]),
    "design": ("designed", "designed", [("the poster", False), ("the new logos", True)]),
    "build": ("built", "built", [("a wooden shed", False), ("the bird boxes", True)]),
    "choose": ("chose", "chosen", [("the winning photo", False), ("the menu items", True)]),
    "clean": ("cleaned", "cleaned", [("the meeting room", False), ("the windows", True)]),
    "organise": ("organised", "organised", [("the book fair", False), ("the archive boxes", True)]),
    "review": ("reviewed", "reviewed", [("the budget", False), ("the applications", True)]),
    "deliver": ("delivered", "delivered", [("the parcel", False), ("the chairs", True)]),
}
_WHEN = ["", " yesterday", " last week", " on Monday", " this morning", " before the holidays"]
_LISTS = {
    "the picnic": ["a blanket", "sandwiches", "lemonade", "napkins", "a frisbee", "sun cream"],
    "the camping trip": ["a tent", "two sleeping bags", "a stove", "a map", "a torch", "spare socks"],
    "the science fair": ["a poster board", "glue", "coloured markers", "a notebook", "an extension cable"],
    "the baking session": ["flour", "butter", "sugar", "three eggs", "vanilla", "a pinch of salt"],
    "the move": ["boxes", "packing tape", "labels", "a marker pen", "bubble wrap", "a toolkit"],
    "the first day of school": ["a pencil case", "a water bottle", "a lunch box", "a timetable", "a jumper"],
}


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _join(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1]


def _rewrite_row(rng: random.Random, entries: list) -> Row:
    kind = rng.randrange(4)
    if kind == 0:
        subj, verb, when = rng.choice(_SUBJECTS), rng.choice(sorted(_VERBS)), rng.choice(_WHEN)
        past, part, objs = _VERBS[verb]
        obj, plural = rng.choice(objs)
        active = f"{_cap(subj)} {past} {obj}{when}."
        passive = f"{_cap(obj)} {'were' if plural else 'was'} {part} by {subj}{when}."
        ask = rng.choice(["Rewrite this sentence in the passive voice:", "Change to passive voice:",
                          "Put the following sentence into the passive:"])
        return f"{ask} \"{active}\"", passive, "prose"
    if kind in (1, 2):
        event = rng.choice(sorted(_LISTS))
        items = rng.sample(_LISTS[event], rng.randrange(3, len(_LISTS[event]) + 1))
        sentence = f"For {event} we need {_join(items)}."
        bullets = "\n".join(f"- {_cap(i)}" for i in items)
        if kind == 1:
            return f"Rewrite this sentence as a bulleted list: \"{sentence}\"", f"For {event}:\n\n{bullets}", "list"
        return (f"Turn this list into one sentence that starts with \"For {event}\":\n\n{bullets}", sentence, "prose")
    qual, _kind, _sig, paras, _call = rng.choice([e for e in entries if len(e[3]) >= 2])
    summary = _sentences(paras[0])[0]
    body = " ".join(paras[1:])
    return (f"Summarise this description of Python's `{qual}` in one line:\n\n{paras[0]} {body}",
            f"`{qual}`: {summary[:1].lower() + summary[1:]}", "prose")


def family_makers() -> dict[str, Callable[[random.Random], Row]]:
    """family name -> row generator (the stdlib-based ones share one docstring index)."""
    entries = _stdlib_entries()
    return {"stdlib_docs": lambda r: _stdlib_row(r, entries), "arithmetic": _arithmetic_row,
            "unit_conversion": _unit_row, "tips": _tips_row, "rewrite": lambda r: _rewrite_row(r, entries)}
