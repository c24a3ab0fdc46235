"""Build the labelled PII set of bench/redaction.py: real sentences with fake, valid identifiers planted in them.

    python bench/pii_set.py                 # writes bench/data/pii_set.jsonl (fixed seed: the same file each run)
    python bench/pii_set.py --check         # rebuild in memory and fail if the committed file differs

Base texts are real, read at run time from ../shared/data (never copied into the repository except as the
sentences of the set itself): BANKING77 (train and test) and CLINC150 (train) questions for English,
waimai_10k reviews for Chinese. Each record takes one real text and plants one or two identifiers through
short templates ("... My card number is {}.", "...，我的手机号是{}"), in the formats people write them:

- EMAIL: random name-like local parts at common and example domains;
- PHONE: US, UK, German, French, Australian, Indian numbers (national and international formats) and
  Chinese mobiles and landlines, each kept only if ``phonenumbers`` says the number is valid (Chinese
  mobiles: 1[3-9] and 9 digits);
- CARD: Visa, Mastercard, Amex, UnionPay, Discover and JCB numbers, Luhn-valid, grouped or not;
- IBAN: GB, DE, NL, CH, AT, BE and ES IBANs with valid check digits (``stdnum.iban`` accepts each), spaced
  in fours or compact;
- CN_ID: Chinese resident ID numbers with a region code and birth date ``stdnum.cn.ric`` accepts and a
  valid check character;
- IP: IPv4 and IPv6 addresses; URL: with scheme, with www., and bare hosts with a path;
- DOB: a date (English or Chinese format) next to a birth cue ("born on", "DOB:", "出生日期", "...出生").

Negatives are planted too and must stay: card numbers that fail Luhn, resident IDs and IBANs with a wrong
check character, order and reference numbers, amounts, times, dates without a birth cue, versions. All
identifiers are random (fixed seed) and fake: they belong to no one on purpose, though a random valid
phone number may exist.

Each JSON line: ``{"id", "lang", "source", "text", "spans": [{"type", "start", "end"}], "negatives":
[{"kind", "start", "end"}]}``; spans index the text (Python str offsets).
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import json
import random
import string
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import phonenumbers
from stdnum import iban as std_iban
from stdnum import luhn
from stdnum.cn import ric

ROOT = Path(__file__).resolve().parent
DATA = ROOT.parent.parent / "shared" / "data"
OUT = ROOT / "data" / "pii_set.jsonl"
SEED = 24  # issue 24
EN_RECORDS = 1000
ZH_RECORDS = 700
NEGATIVE_SHARE = 0.45  # records that also get a planted negative

FIRST = ["jane", "li", "wei", "maria", "john", "amir", "sofia", "chen", "olga", "raj", "emma", "zhang", "liu", "tom"]
LAST = ["doe", "smith", "wang", "garcia", "kumar", "novak", "yang", "brown", "zhou", "muller", "rossi", "lee"]
DOMAINS = [
    "example.com",
    "example.org",
    "mail.example.net",
    "gmail.com",
    "outlook.com",
    "163.com",
    "qq.com",
    "example.co.uk",
    "company.example",
    "126.com",
    "yahoo.co.jp",
]
TLDS = ["com", "org", "net", "io", "co.uk", "cn", "de"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


# ---------------------------------------------------------------- identifiers


def email(r: random.Random) -> str:
    local = r.choice(
        [
            f"{r.choice(FIRST)}.{r.choice(LAST)}",
            f"{r.choice(FIRST)}{r.randint(1, 999)}",
            f"{r.choice(FIRST)}_{r.choice(LAST)}",
            f"{r.choice(FIRST)[0]}{r.choice(LAST)}+bank",
            "".join(r.choices(string.digits, k=9)),
        ]
    )
    return f"{local}@{r.choice(DOMAINS)}"


_PHONE_PLANS = {  # region: (digits of the national number, its possible starts)
    "US": (10, ["201", "212", "312", "415", "617", "646", "702", "718", "805", "917"]),
    "GB": (10, ["20", "7700", "7911", "7400", "121", "131", "161"]),
    "DE": (11, ["30", "40", "89", "151", "160", "170"]),
    "FR": (9, ["1", "6", "7"]),
    "AU": (9, ["2", "3", "4"]),
    "IN": (10, ["98", "99", "70", "80"]),
}


def phone(r: random.Random, zh: bool = False) -> str:
    if zh or r.random() < 0.15:
        return cn_phone(r)
    region = r.choice(list(_PHONE_PLANS))
    length, starts = _PHONE_PLANS[region]
    for _ in range(1000):
        start = r.choice(starts)
        national = start + "".join(r.choices(string.digits, k=length - len(start)))
        number = phonenumbers.parse(national, region) if region != "GB" else phonenumbers.parse("0" + national, "GB")
        if phonenumbers.is_valid_number(number):
            break
    else:
        raise RuntimeError(f"no valid {region} number drawn")
    # National formats only for the regions slm reads national numbers of by default (US, GB); others
    # are written as people abroad write them: with the country code.
    formats = [phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164]
    if region in ("US", "GB"):
        formats += [phonenumbers.PhoneNumberFormat.NATIONAL] * 3
    text = phonenumbers.format_number(number, r.choice(formats))
    if region == "US" and r.random() < 0.3:  # 415-555-2671 and 415.555.2671
        digits = str(number.national_number)
        text = r.choice(["-", "."]).join([digits[:3], digits[3:6], digits[6:]])
    return text


def cn_phone(r: random.Random) -> str:
    if r.random() < 0.2:  # a landline with its area code: 010-6552 9988, 0755-8888 6666
        for _ in range(1000):
            area = r.choice(["10", "21", "20", "755", "571", "28"])
            local = str(r.randint(2, 8)) + "".join(r.choices(string.digits, k=7))
            number = phonenumbers.parse(f"0{area}{local}", "CN")
            if phonenumbers.is_valid_number(number):
                return r.choice([f"0{area}-{local}", f"0{area}-{local[:4]} {local[4:]}", f"(0{area}){local}"])
        raise RuntimeError("no valid Chinese landline drawn")
    digits = f"1{r.choice('3456789')}" + "".join(r.choices(string.digits, k=9))
    style = r.randrange(6)
    grouped = f"{digits[:3]} {digits[3:7]} {digits[7:]}"
    return [
        digits,
        grouped,
        f"{digits[:3]}-{digits[3:7]}-{digits[7:]}",
        f"+86 {grouped}",
        f"+86-{digits}",
        f"(+86){digits}",
    ][style]


_CARD_PLANS = [
    ("4", 16),
    ("51", 16),
    ("55", 16),
    ("2221", 16),
    ("34", 15),
    ("37", 15),
    ("62", 16),
    ("62", 19),
    ("6011", 16),
    ("35", 16),
]


def card_digits(r: random.Random, valid: bool = True) -> str:
    prefix, length = r.choice(_CARD_PLANS)
    body = prefix + "".join(r.choices(string.digits, k=length - len(prefix) - 1))
    check = luhn.calc_check_digit(body)
    if not valid:
        check = str((int(check) + r.randint(1, 9)) % 10)
    return body + check


def group_card(r: random.Random, digits: str) -> str:
    style = r.randrange(3)
    if style == 0:
        return digits
    sep = " " if style == 1 else "-"
    if len(digits) == 15:
        return sep.join([digits[:4], digits[4:10], digits[10:]])
    return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))


def card(r: random.Random) -> str:
    return group_card(r, card_digits(r))


_IBAN_PLANS = {  # country: BBAN as (kind, count) pieces; a = upper-case letters, n = digits
    "GB": [("a", 4), ("n", 14)],
    "DE": [("n", 18)],
    "NL": [("a", 4), ("n", 10)],
    "CH": [("n", 17)],
    "AT": [("n", 16)],
    "BE": [("n", 12)],
    "ES": [("n", 20)],
}


def _iban_check(country: str, bban: str) -> str:
    moved = bban + country + "00"
    number = int("".join(str(int(c, 36)) for c in moved))
    return f"{98 - number % 97:02d}"


def iban(r: random.Random, valid: bool = True) -> str:
    country = r.choice(list(_IBAN_PLANS))
    for _ in range(5000):
        bban = "".join(
            "".join(r.choices(string.ascii_uppercase if kind == "a" else string.digits, k=n))
            for kind, n in _IBAN_PLANS[country]
        )
        value = country + _iban_check(country, bban) + bban
        if std_iban.is_valid(value):
            break
    else:
        raise RuntimeError(f"no valid {country} IBAN drawn")
    if not valid:
        value = value[:2] + f"{(int(value[2:4]) + r.randint(1, 90)) % 97 + 2:02d}"[-2:] + value[4:]
        if std_iban.is_valid(value):
            value = value[:2] + ("00" if value[2:4] != "00" else "01") + value[4:]
    if r.random() < 0.6:
        return " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


_CN_REGIONS = [
    "110101",
    "110105",
    "110108",
    "310104",
    "310115",
    "440305",
    "440106",
    "330106",
    "510107",
    "420106",
    "320102",
    "500103",
    "610113",
    "370202",
    "210102",
    "350203",
]


def cn_id(r: random.Random, valid: bool = True) -> str:
    for _ in range(1000):
        birth = f"{r.randint(1950, 2005)}{r.randint(1, 12):02d}{r.randint(1, 28):02d}"
        body = r.choice(_CN_REGIONS) + birth + "".join(r.choices(string.digits, k=3))
        check = ric.calc_check_digit(body + "0")
        if valid:
            value = body + check
            if ric.is_valid(value):
                return value
        else:
            wrong = r.choice([c for c in "0123456789X" if c != check])
            return body + wrong
    raise RuntimeError("no valid resident ID drawn")


def ip(r: random.Random) -> str:
    if r.random() < 0.7:
        return str(ipaddress.IPv4Address(r.getrandbits(32) | 0x01000000))
    return str(
        ipaddress.IPv6Address(r.getrandbits(128))
        if r.random() < 0.5
        else ipaddress.IPv6Address((0x20010DB8 << 96) | r.getrandbits(64))
    )


def url(r: random.Random, zh: bool = False) -> str:
    name = f"{r.choice(FIRST)}{r.randint(1, 99)}"
    word = r.choice(["shop", "my", "pay", "help", "app"]) + r.choice(["bank", "mall", "food", "trip"])
    host = f"{word}.{r.choice(TLDS if not zh else ['cn', 'com', 'com.cn'])}"
    path = r.choice(
        [
            f"/u/{name}",
            f"/order?id={r.randint(10**5, 10**9)}",
            f"/profile/{name}/photos",
            f"/t/{r.getrandbits(40):x}",
            "",
        ]
    )
    return r.choice([f"https://{host}{path}", f"http://www.{host}{path}", f"www.{host}{path}", f"{host}{path or '/'}"])


def dob(r: random.Random, zh: bool = False) -> str:
    y, m, d = r.randint(1940, 2008), r.randint(1, 12), r.randint(1, 28)
    if zh:
        return r.choice(
            [f"{y}年{m}月{d}日", f"{y}年{m:02d}月{d:02d}日", f"{y}-{m:02d}-{d:02d}", f"{y}/{m}/{d}", f"{y}年{m}月{d}号"]
        )
    return r.choice(
        [
            f"{m:02d}/{d:02d}/{y}",
            f"{d:02d}/{m:02d}/{y}",
            f"{y}-{m:02d}-{d:02d}",
            f"{d} {MONTHS[m - 1]} {y}",
            f"{MONTHS[m - 1]} {d}, {y}",
            f"{MONTHS[m - 1][:3]} {d} {y}",
            f"{d:02d}.{m:02d}.{y}",
        ]
    )


VALUES: dict[str, Callable[[random.Random, bool], str]] = {
    "EMAIL": lambda r, zh: email(r),
    "PHONE": phone,
    "CARD": lambda r, zh: card(r),
    "IBAN": lambda r, zh: iban(r),
    "CN_ID": lambda r, zh: cn_id(r),
    "IP": lambda r, zh: ip(r),
    "URL": url,
    "DOB": dob,
}

# ---------------------------------------------------------------- templates ({} is the identifier)

TEMPLATES = {
    "en": {
        "EMAIL": ["You can email me at {}.", "my email is {}", "Contact: {}", "please reply to {} asap", "({})"],
        "PHONE": ["Call me on {}.", "my number is {}", "Phone: {}", "you can reach me at {} after 5", "text {} please"],
        "CARD": ["My card number is {}.", "card {} was charged", "The card ending was {}", "I used {} for this."],
        "IBAN": ["Send it to IBAN {}.", "my IBAN is {}", "account {} please", "IBAN: {}"],
        "CN_ID": ["My Chinese ID number is {}.", "ID card {}", "resident ID: {}"],
        "IP": ["I'm logging in from {}.", "my IP is {}", "blocked at {} again", "IP address {}"],
        "URL": ["See {} for the screenshot.", "I paid on {}", "link: {}", "the page {} does not load"],
        "DOB": ["My date of birth is {}.", "I was born on {}.", "DOB: {}", "born {}", "my birthday is {}"],
    },
    "zh": {
        "EMAIL": ["我的邮箱是{}", "邮箱：{}", "请发到{}", "联系邮箱{}谢谢"],
        "PHONE": ["我的手机号是{}", "电话：{}", "有问题请联系{}", "联系电话{}，谢谢", "打{}找我"],
        "CARD": ["银行卡号{}", "我的卡号是{}", "用{}这张卡付的"],
        "IBAN": ["收款账户IBAN {}", "国外账户：{}"],
        "CN_ID": ["身份证号{}", "我的身份证是{}", "身份证：{}"],
        "IP": ["IP地址{}", "我的IP是{}"],
        "URL": ["链接{}", "网址：{}", "详见{}"],
        "DOB": ["出生日期：{}", "我{}出生", "生日是{}", "我是{}出生的"],
    },
}
TYPE_WEIGHTS = {
    "en": {"EMAIL": 14, "PHONE": 18, "CARD": 14, "IBAN": 10, "CN_ID": 3, "IP": 10, "URL": 12, "DOB": 14},
    "zh": {"EMAIL": 10, "PHONE": 24, "CARD": 12, "IBAN": 3, "CN_ID": 18, "IP": 6, "URL": 10, "DOB": 16},
}


def negative(r: random.Random, lang: str) -> tuple[str, str, str]:
    """(kind, sentence with {}, the value): something that looks like an identifier and is not one."""
    zh = lang == "zh"
    kind = r.choice(
        ["card_bad_luhn", "cn_id_bad_check", "iban_bad_check", "order", "amount", "time", "date", "version"]
    )
    if kind == "card_bad_luhn":
        return kind, ("卡号{}" if zh else "card {}"), group_card(r, card_digits(r, valid=False))
    if kind == "cn_id_bad_check":
        return kind, ("身份证号{}" if zh else "ID {}"), cn_id(r, valid=False)
    if kind == "iban_bad_check":
        return kind, ("账户{}" if zh else "IBAN {}"), iban(r, valid=False)
    if kind == "order":
        value = r.choice(
            [
                f"#{r.randint(10**5, 10**8)}",
                f"A{r.randint(10**6, 10**9)}",
                f"{r.randint(10**9, 10**12)}",
                f"2023{r.randint(1, 12):02d}{r.randint(1, 28):02d}-{r.randint(10**4, 10**6)}",
            ]
        )
        return (
            kind,
            r.choice(["订单号{}", "单号：{}"] if zh else ["order {}", "reference {}", "tracking number {}"]),
            value,
        )
    if kind == "amount":
        value = (
            r.choice(
                [
                    f"${r.randint(1, 99999):,}.{r.randint(0, 99):02d}",
                    f"£{r.randint(1, 5000)}",
                    f"{r.randint(1, 9999)}.{r.randint(0, 99):02d} EUR",
                ]
            )
            if not zh
            else r.choice(
                [
                    f"{r.randint(1, 999)}元",
                    f"¥{r.randint(1, 999)}.{r.randint(0, 9)}",
                    f"{r.randint(1, 99)}块{r.randint(1, 9)}",
                ]
            )
        )
        return kind, ("花了{}" if zh else "it cost {}"), value
    if kind == "time":
        value = f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}" + (
            f":{r.randint(0, 59):02d}" if r.random() < 0.3 else ""
        )
        return kind, ("{}送到" if zh else "at {}"), value
    if kind == "date":
        return kind, ("{}下的单" if zh else "on {}"), dob(r, zh)
    return kind, ("版本{}" if zh else "app version {}"), f"{r.randint(1, 20)}.{r.randint(0, 20)}.{r.randint(0, 99)}"


# ---------------------------------------------------------------- records


def base_texts() -> dict[str, list[tuple[str, str]]]:
    """(source, text) pairs: real English questions and Chinese reviews, in file order."""
    en: list[tuple[str, str]] = []
    for split in ("train", "test"):
        with (DATA / "banking77" / f"{split}.csv").open(encoding="utf-8") as handle:
            en += [("banking77", row["text"].strip()) for row in csv.DictReader(handle)]
    clinc = json.loads((DATA / "clinc150" / "data_full.json").read_text(encoding="utf-8"))
    en += [("clinc150", text.strip()) for text, _ in clinc["train"]]
    with (DATA / "waimai_10k" / "waimai_10k.csv").open(encoding="utf-8") as handle:
        zh = [("waimai_10k", row["review"].strip()) for row in csv.DictReader(handle)]
    return {"en": [p for p in en if p[1]], "zh": [p for p in zh if 4 <= len(p[1]) <= 200]}


def record(r: random.Random, lang: str, source: str, base: str, index: int) -> dict:
    """One real text with one or two identifiers (and maybe a negative) planted by templates."""
    zh = lang == "zh"
    types = list(TYPE_WEIGHTS[lang])
    weights = list(TYPE_WEIGHTS[lang].values())
    planted = [r.choices(types, weights)[0] for _ in range(2 if r.random() < 0.3 else 1)]
    pieces: list[tuple[str, str | None, str | None]] = []  # (text, span type, negative kind)
    for kind in planted:
        template = r.choice(TEMPLATES[lang][kind])
        pieces.append((template, kind, None))
    negative_value = ""
    if r.random() < NEGATIVE_SHARE:
        neg_kind, template, negative_value = negative(r, lang)
        pieces.append((template, None, neg_kind))
    r.shuffle(pieces)
    joiner = "，" if zh else " "
    text, spans, negatives = "", [], []
    before = r.random() < 0.3  # the base text after the planted sentences, else before them
    if not before:
        text = base + ("。" if zh and base[-1] not in "。！？!?，,～~" else "") + (joiner if not zh else "")
    for n, (template, kind, neg_kind) in enumerate(pieces):
        if n:
            text += joiner
        head, _, tail = template.partition("{}")
        value = VALUES[kind](r, zh) if kind else negative_value
        text += head
        entry = {"start": len(text), "end": len(text) + len(value)}
        if kind:
            spans.append({"type": kind, **entry})
        else:
            negatives.append({"kind": neg_kind, **entry})
        text += value + tail
    if before:
        text += ("。" if zh else " ") + base
    return {
        "id": f"{lang}-{index:04d}",
        "lang": lang,
        "source": source,
        "text": text,
        "spans": spans,
        "negatives": negatives,
    }


def build(seed: int = SEED) -> list[dict]:
    """The records drawn with ``seed`` (SEED: the committed set; another: a fresh draw to check against)."""
    r = random.Random(seed)
    texts = base_texts()
    out = []
    for lang, count in (("en", EN_RECORDS), ("zh", ZH_RECORDS)):
        picked = r.sample(texts[lang], count)
        out += [record(r, lang, source, base, i) for i, (source, base) in enumerate(picked)]
    return out


def summary(records: list[dict]) -> str:
    spans = Counter((rec["lang"], s["type"]) for rec in records for s in rec["spans"])
    negatives = sum(len(rec["negatives"]) for rec in records)
    total = sum(spans.values())
    per = ", ".join(f"{lang}/{kind} {n}" for (lang, kind), n in sorted(spans.items()))
    return f"{len(records)} records, {total} spans ({per}), {negatives} negatives"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed set differs from a rebuild")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"no data folder at {DATA}: the set is built from ../shared/data", file=sys.stderr)
        return 2
    records = build()
    lines = "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
    if args.check:
        same = OUT.is_file() and OUT.read_text(encoding="utf-8") == lines
        print(("same as " if same else "DIFFERS from ") + str(OUT))
        return 0 if same else 1
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(lines, encoding="utf-8")
    print(f"wrote {OUT}: {summary(records)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
