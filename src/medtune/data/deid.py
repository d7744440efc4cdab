"""De-identification: find protected health information (PHI) in text and replace it with typed placeholders.

``deidentify("Call +44 20 7946 0958, MRN: A1234567")`` gives ``"Call [PHONE], MRN: [MRN]"`` and the counts
per type. The rules are regular expressions (stdlib ``re``, compiled once at import), some with a check
on the match (checksum, valid date, digit count), for structured identifiers:

=========  ==================================================================================================
EMAIL      e-mail addresses
PHONE      international (+CC / 00CC), North American, Chinese mobile and landline numbers; any 7-15 digit
           number after a phone keyword (tel, phone, mobile, fax, 电话, 手机, ...)
ID         Chinese resident ID (18 digits, valid date and ISO 7064 MOD 11-2 check char; 15-digit legacy
           with a valid date), US SSN, UK NHS number (mod-11 check) with a keyword or written 3-3-4 with
           spaces, and anything shaped like one of these, or a passport / licence number, after an ID
           keyword (身份证号, SSN, NHS number, passport no., ...)
MRN        the identifier after a record-number keyword (MRN, Patient ID, 病历号, 住院号, ...)
INSURANCE  the identifier after an insurance keyword (policy number, member ID, 医保卡号, ...)
DOB        the date after a birth keyword (DOB, date of birth, born, 出生日期, 生于, ...) or before 出生
ADDRESS    street addresses (English and Chinese), UK postcodes, "City, ST 12345", ZIP / 邮编 after a keyword
IP         IPv4 (not inside a longer dotted number, not after "version") and IPv6 addresses
=========  ==================================================================================================

Keyword-led rules replace only the value: ``"MRN: [MRN]"``, ``"DOB: [DOB]"``.

Overlaps: every rule runs on the whole text; where candidate spans overlap, the longest wins, then the
type that comes first in ``_PRIORITY`` (keyword-led types, whose keyword says what the value is, before
pattern types), then the leftmost. A span's type therefore never depends on ``types=``, which only
filters the result.

Limits, plainly: names of people are NOT detected, nor are free-text places without a number (a town,
a hospital or ward name), ages, dates other than birth dates (visit and admission dates stay), URLs,
or identifiers written in words or in full-width digits. Rules find what they were written for and
miss what is written differently. A de-identified corpus must still be reviewed (read a random sample,
search it for names) before it is shared. See docs/deid.md.
"""

from __future__ import annotations

import bisect
import collections
import datetime as _dt
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from medtune.errors import MedtuneError

PHI_TYPES: tuple[str, ...] = ("EMAIL", "PHONE", "ID", "MRN", "INSURANCE", "DOB", "ADDRESS", "IP")

# Tie-break for overlapping spans of equal length: a keyword says what the value is, so keyword-led
# types come first; then validated IDs; then the pattern-only types.
_PRIORITY = {t: i for i, t in enumerate(("MRN", "INSURANCE", "DOB", "ID", "PHONE", "EMAIL", "IP", "ADDRESS"))}


@dataclass(frozen=True)
class Span:
    """One PHI occurrence: ``text[start:end]`` of type ``type``."""

    start: int
    end: int
    type: str
    text: str


# --------------------------------------------------------------------------- checks


_CN_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CN_CHECK = "10X98765432"  # index: weighted sum mod 11 (ISO 7064 MOD 11-2 with 10 written X)
# Province-level codes (first two digits of a resident ID), from GB/T 2260.
_CN_PROVINCES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 64 65 71 81 82".split()
)


def cn_id_check_char(first17: str) -> str:
    """The check character of a Chinese resident ID from its first 17 digits."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError("need exactly 17 digits")
    return _CN_CHECK[sum(int(c) * w for c, w in zip(first17, _CN_WEIGHTS)) % 11]


def _valid_date(y: int, m: int, d: int, past: bool = True) -> bool:
    """A real calendar date from 1880 on, and not in the future when `past`."""
    try:
        date = _dt.date(y, m, d)
    except ValueError:
        return False
    return date >= _dt.date(1880, 1, 1) and (not past or date <= _dt.date.today())


def is_valid_cn_id(s: str) -> bool:
    """True for an 18-character resident ID with a known province, a real past birth date and the right
    check char, or a 15-digit legacy ID (born 19YY) with a known province and a real birth date."""
    s = s.upper()
    if len(s) == 18 and s[:17].isdigit():
        return (s[:2] in _CN_PROVINCES and _valid_date(int(s[6:10]), int(s[10:12]), int(s[12:14]))
                and cn_id_check_char(s[:17]) == s[17])
    if len(s) == 15 and s.isdigit():
        return s[:2] in _CN_PROVINCES and _valid_date(1900 + int(s[6:8]), int(s[8:10]), int(s[10:12]))
    return False


def is_valid_nhs(s: str) -> bool:
    """True for a 10-digit UK NHS number whose last digit is its mod-11 check digit (weights 10..2)."""
    if len(s) != 10 or not s.isdigit():
        return False
    check = 11 - sum(int(c) * w for c, w in zip(s, range(10, 1, -1))) % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(s[9])


def is_valid_ssn(s: str) -> bool:
    """True for a 9-digit US SSN outside the never-issued ranges (area 000/666/9xx, group 00, serial 0000)."""
    if len(s) != 9 or not s.isdigit():
        return False
    area, group, serial = s[:3], s[3:5], s[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


# --------------------------------------------------------------------------- building blocks

_F = re.ASCII  # \b, \w, \d, \s are ASCII: Chinese characters count as non-word, so "电话138..." has a boundary
_FI = re.ASCII | re.IGNORECASE

_D = r"(?:0?[1-9]|[12]\d|3[01])"
_M = r"(?:0?[1-9]|1[0-2])"
_Y4 = r"(?:1[89]\d\d|20\d\d)"
_MON = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
        r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?")
_ORD = r"(?:st|nd|rd|th)?"
_DATE = (
    rf"(?:{_Y4}\s*年\s*{_M}\s*月(?:\s*{_D}\s*[日号])?"  # 1984年3月12日, 1984年3月
    rf"|{_Y4}[-/.]{_M}[-/.]{_D}(?!\d)"  # 1984-03-12, 1984/3/12
    rf"|\d{{1,2}}[-/.]\d{{1,2}}[-/.](?:{_Y4}|\d\d)(?!\d)"  # 12/03/1984, 03.12.84 (validated)
    rf"|{_D}{_ORD}[ -](?:of\s+)?{_MON}[ ,-]*(?:{_Y4}|'?\d\d)(?!\d)"  # 12 March 1984, 12-Mar-84
    rf"|{_MON}\s*{_D}{_ORD},?\s*{_Y4}(?!\d)"  # March 12, 1984
    rf"|{_MON},?\s*{_Y4}(?!\d)"  # March 1984
    rf"|{_Y4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d))"  # 19840312
)

# Identifier after a keyword: an optional upper-case prefix word, then tokens holding a digit, joined by
# - . / or by a space before a 3-5 digit group ("123 4567").
_VALUE = (r"(?P<v>(?:(?-i:[A-Z]{1,5})[ -])?[A-Za-z0-9]*\d[A-Za-z0-9]*(?:[-./][A-Za-z0-9]+)*"
          r"(?: \d{3,5}(?![A-Za-z0-9-]))*)")
_FILL = r"(?:\s*(?:\(\s*)?(?:#|no\.?|nr\.?|num(?:ber)?\.?|id)?(?:\s*\))?\s*[:：#=\-–]?\s*(?:is\s+|was\s+|为|是)?\s*)"
_FILL_CN = r"(?:\s*(?:No\.?\s*)?(?:[(（][A-Za-z]{1,4}[)）])?\s*[:：#=]?\s*(?:为|是)?\s*)"

_NUM_WORD = r"(?:number|no\.?|nr\.?|#|ID)"
_KW_END = r"(?:(?<=#)|(?![A-Za-z]))"  # a word keyword must not run into letters; "Policy #W123" may
_MRN_KW = (r"(?:\b(?:MRN|M\.R\.N\.?|MR\s*#|UR\s*(?:number|no\.?)|hosp\.?\s*(?:number|no\.?)|"
           r"(?:medical|hospital|health)\s+record(?:\s+(?:number|no\.?|#))?|med\s*rec(?:ord)?\s*(?:no\.?|#)|"
           r"record\s+(?:number|no\.?)|(?:patient|pt\.?)\s+(?:ID|identifier|number|no\.?|#)|"
           r"hospital\s+(?:number|no\.?|ID|#)|chart\s*(?:#|number|no\.?)|case\s+(?:number|no\.?)|"
           r"admission\s+(?:number|no\.?)|encounter\s+(?:number|no\.?|ID)|accession\s+(?:number|no\.?))"
           rf"{_KW_END}{_FILL}"
           r"|(?:病历号码|病历编号|病历号|病案号码|病案号|住院号码|住院号|住院ID|门诊号码|门诊号|门诊ID|就诊号|就诊卡号|"
           r"就诊ID|诊疗卡号|登记号|病人ID|患者ID|患者编号|病人编号|ID号)"
           rf"{_FILL_CN})")
# bare "insurance", "policy", "Medicare" only before a colon: "insurance 2023 renewal" has no number
_INS_KW = (r"(?:\b(?:(?:health\s+)?insurance(?:\s+(?:policy|card|member|plan))?\s*" + _NUM_WORD + r"|"
           r"(?:health\s+)?(?:insurance|policy|medicare|medicaid)(?=\s*[:：\-–])|"
           r"policy\s*" + _NUM_WORD + r"|member(?:ship)?\s*" + _NUM_WORD + r"|subscriber\s+" + _NUM_WORD + r"|"
           r"group\s+(?:number|no\.?|#)|(?:medicare|medicaid|health)(?:\s+card)?\s*" + _NUM_WORD + r"|"
           r"(?:medicare|medicaid|health)\s+card|beneficiary\s+(?:ID|number)|health\s+plan\s+" + _NUM_WORD + r")"
           rf"{_KW_END}{_FILL}"
           r"|(?:医保卡号|医保号|医保卡|医疗保险号|社保卡号|社保号|社会保障卡号|保险单号|保单号|保险号|新农合号|参保号)"
           rf"{_FILL_CN})")
_DOB_KW = (r"(?:\b(?:DOB|D\.O\.B\.?|date\s+of\s+birth|birth\s*date|birthday|born(?:\s+(?:on|in))?(?:\s+the)?)(?![A-Za-z])"
           r"\s*(?:\([^)\n]{0,16}\))?[\s:：,=(\-–]*(?:is\s+|was\s+|on\s+)?"
           r"|(?:出生日期|出生年月日|出生年月|出生时间|生日|出生于|出生在|生于|出生(?=\s*[:：]))[\s:：]*(?:为|是)?\s*)")

# English street address: number, 1-4 capitalised words (or 5th, 42nd), a street type.
_STREET_TYPES = (r"(?:Street|St|Road|Rd|Avenue|Ave|Av|Lane|Ln|Drive|Dr|Boulevard|Blvd|Way|Court|Ct|Place|Pl|"
                 r"Terrace|Terr|Crescent|Cres|Close|Square|Sq|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Trail|Row|Grove|"
                 r"Gardens|Mews|Walk|Hill|Broadway|Gate|Loop|Parade|Quay|Plaza|Alley|Expressway|Freeway|Turnpike)")
_UNIT = r"(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor|Room|Rm|#)"
_UK_PC = r"(?:[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]? \d[ABD-HJLNP-UW-Z]{2}|GIR 0AA)"
_US_STATES = (r"(?:AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|"
              r"NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY)")
_CITY = r",\s*(?:St\.\s+)?[A-Z][A-Za-z'-]+(?:\s+[A-Z][A-Za-z'-]+){0,2}"
_ZIP_TAIL = rf"(?:,?\s*{_US_STATES}\s+\d{{5}}(?:-\d{{4}})?(?!\d)|,?\s*{_UK_PC}(?![A-Za-z0-9]))"
_EN_STREET = (
    rf"(?<![\w.,/-])(?:{_UNIT}\.?\s*[A-Za-z0-9-]{{1,5}},?\s+)?"
    r"\d{1,5}[A-Za-z]?(?:[-/]\d{1,5}[A-Za-z]?)?,?\s+"
    r"(?:(?:[A-Z][A-Za-z'.-]*|\d{1,3}(?:st|nd|rd|th))\s+){1,4}"
    rf"(?:{_STREET_TYPES}|(?i:street|road|avenue|lane|drive|boulevard))\b"
    r"(?:\.?\s+(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\b)?"
    # "St." keeps its dot only when more of the address follows: at a sentence end it is the full stop
    rf"(?:\.?,?\s*{_UNIT}\.?\s*#?\s*[A-Za-z0-9-]{{1,6}}(?![A-Za-z0-9]))?"
    # a city after a comma only when a ZIP/postcode or the end of the sentence follows: "..., London."
    rf"(?:\.?(?:{_CITY}{_ZIP_TAIL}|{_CITY}(?=\s*(?:[.;:)\n]|$))|{_ZIP_TAIL}))?"
)
_NOT_BEFORE_STREET = frozenset(
    "take takes taking took give given gave giving use used apply applied chew inhale inject injected "
    "administer administered x every for about approximately over after before within last".split()
)

_PROVINCES = ("北京|天津|上海|重庆|河北|山西|辽宁|吉林|黑龙江|江苏|浙江|安徽|福建|江西|山东|河南|湖北|湖南|广东|海南|"
              "四川|贵州|云南|陕西|甘肃|青海|台湾|内蒙古|广西|西藏|宁夏|新疆|香港|澳门")
_HAN = "\u4e00-\u9fff"
_CN_NUM = "0-9一二三四五六七八九十百零〇"
_CN_CITY = rf"(?:[{_HAN}]{{1,7}}?(?:市|州|盟|地区))"
_CN_DISTRICT = rf"(?:[{_HAN}]{{1,7}}?(?:区|县|旗|市))"
_CN_TOWN = rf"(?:[{_HAN}]{{1,7}}?(?:镇|乡|街道))"
_CN_UNIT = rf"(?:[{_HAN}A-Za-z]{{0,8}}?[0-9A-Za-z{_CN_NUM}]+(?:号楼|栋|幢|座|楼|单元|层|室|号|户))"
_CN_TRIGGERS = ("住址", "地址", "家住", "现住", "住在", "住于", "居住在", "居住于", "居住", "来自", "户籍地", "户籍", "位于")
_CN_ADDR = (
    # start: a province; or after an address word; or, with a city or district, after punctuation
    rf"(?:(?:{_PROVINCES})(?:省|市|壮族自治区|回族自治区|维吾尔自治区|自治区|特别行政区)?"
    rf"{_CN_CITY}?{_CN_DISTRICT}?{_CN_TOWN}?"
    rf"|(?:{'|'.join(f'(?<={w})' for w in _CN_TRIGGERS)})(?![在于为是：:]){_CN_CITY}?{_CN_DISTRICT}?{_CN_TOWN}?"
    rf"|(?:(?<=[：:，,。；;\s（(])|^)(?:{_CN_CITY}{_CN_DISTRICT}?|{_CN_DISTRICT}){_CN_TOWN}?)"
    # road (not 消化道, 呼吸道, ...) and number, then building / unit / room
    rf"(?:[{_HAN}A-Za-z0-9]{{1,10}}?(?:大道|大街|路|街|巷|(?<!消化)(?<!呼吸)(?<![尿胆食阴肠气泪])道|胡同|弄|里|村)(?:[{_CN_NUM}]{{1,3}}段)?"
    rf"(?:[{_CN_NUM}]+(?:[-之][0-9]+)?[号號]|[{_CN_NUM}]+[组队])"
    rf"{_CN_UNIT}*"
    # or a housing estate with at least a building or room number
    rf"|[{_HAN}A-Za-z0-9]{{1,10}}?(?:小区|花园|家园|公寓|大厦|新村|苑|广场|大院|社区){_CN_UNIT}+)"
    r"(?:(?<=[楼栋幢座元层])[0-9]{1,5}(?:室|号|房)?)?"
)
_CN_LEAD = re.compile(rf"^(?:.*?(?:{'|'.join(_CN_TRIGGERS)}))?[在于：:]*")
_CN_PROVINCE_RE = re.compile(_PROVINCES)


# --------------------------------------------------------------------------- validators
# Each takes the match and the text and returns the (start, end) to replace, or None to drop the match.

Validator = Callable[[re.Match, str], "tuple[int, int] | None"]


def _whole(m: re.Match, text: str) -> tuple[int, int]:
    return m.span()


def _value(m: re.Match, text: str) -> tuple[int, int]:
    return m.span("v")


def _keyword_value(m: re.Match, text: str) -> tuple[int, int] | None:
    """An identifier after a keyword: at least 4 letters/digits, 3 of them digits."""
    v = m.group("v")
    if sum(c.isalnum() for c in v) < 4 or sum(c.isdigit() for c in v) < 3:
        return None
    return m.span("v")


def _cn_id(m: re.Match, text: str) -> tuple[int, int] | None:
    return m.span() if is_valid_cn_id(m.group().replace(" ", "")) else None


def _ssn(m: re.Match, text: str) -> tuple[int, int] | None:
    return m.span() if is_valid_ssn(_digits(m.group())) else None


_PHONE_CONTEXT = re.compile(r"(?:\b(?:tel|telephone|phone|mobile|cell|fax|call|contact|reach)|电话|手机|联系)", _FI)


def _nhs_spaced(m: re.Match, text: str) -> tuple[int, int] | None:
    # "ddd ddd dddd" is also a US phone layout: after a phone word it is a phone, whatever the check digit
    if _PHONE_CONTEXT.search(text, max(0, m.start() - 25), m.start()):
        return None
    return m.span() if is_valid_nhs(_digits(m.group())) else None


def _id_keyword(m: re.Match, text: str) -> tuple[int, int] | None:
    """After an ID keyword the shape is enough (a typo in the check digit is still an ID number)."""
    v = m.group("v")
    return m.span("v") if sum(c.isdigit() for c in v) >= 5 else None


def _date_ok(s: str) -> bool:
    """A DOB candidate is a real calendar date (a typo'd future year still counts: the keyword says DOB)."""
    if re.search(r"[A-Za-z]", s):
        return True  # month names: the pattern bounds day and year
    nums = re.findall(r"\d+", s)
    if len(nums) == 1:  # 19840312
        nums = [nums[0][:4], nums[0][4:6], nums[0][6:]]
    a, b, c = (int(x) for x in (nums + ["1"])[:3])  # 1984年3月: day 1
    if a >= 1000:  # year first
        return _valid_date(a, b, c, past=False)
    year = c + (1900 if c >= 30 else 2000) if c < 100 else c
    return _valid_date(year, b, a, past=False) or _valid_date(year, a, b, past=False)  # day-month or month-day


def _dob(m: re.Match, text: str) -> tuple[int, int] | None:
    return m.span("v") if _date_ok(m.group("v")) else None


def _street(m: re.Match, text: str) -> tuple[int, int] | None:
    before = text[max(0, m.start() - 20):m.start()].split()
    if before and before[-1].lower().strip(".,:;(") in _NOT_BEFORE_STREET:
        return None
    return m.span()


_VERSION_WORDS = frozenset(("version", "ver", "ver.", "v", "release", "build", "版本", "版本号"))


def _cn_address(m: re.Match, text: str) -> tuple[int, int] | None:
    """Start after a leading address word (家住, 住址, ...) the match may hold, or at a province name."""
    s = m.group()
    cut = _CN_LEAD.match(s).end()
    p = _CN_PROVINCE_RE.search(s, 0, 12)
    if p and p.start() > cut:
        cut = p.start()
    return m.start() + cut, m.end()


def _ipv4(m: re.Match, text: str) -> tuple[int, int] | None:
    before = text[max(0, m.start() - 12):m.start()].lower()
    words = before.split()
    if (words and words[-1].rstrip(":") in _VERSION_WORDS) or before.endswith(("v", "版本", "版本号")):
        return None  # "version 1.2.3.4", "v1.2.3.4"
    after = text[m.end():m.end() + 1]
    if len(m.group()) == 7 and (m.start() == 0 or text[m.start() - 1] == "\n" or (after and after.isalpha())):
        return None  # outline numbering: "1.2.1.3 Janssen", "1.1.1.1依拓康"
    return m.span()


def _ipv6(m: re.Match, text: str) -> tuple[int, int] | None:
    s = m.group()
    if s.count(":") < 2 or sum(c.isalnum() for c in s) < 4:
        return None
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return None
    return m.span()


# Longest national number after the country code, for a few codes (others: 15 digits in all). Used to trim a
# trailing digit group that belongs to the next words ("+1 415 555 2671 2 tablets").
_CC_MAX = {"1": 10, "7": 10, "33": 9, "34": 9, "39": 11, "44": 10, "49": 11, "61": 9, "65": 8, "81": 10,
           "82": 10, "86": 11, "91": 10, "852": 8, "853": 8, "886": 9}
_CC2 = frozenset("20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 "
                 "60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98".split())


def _cc(digits: str) -> str:
    """The country code at the start of an international number (ITU: 1 and 7 are one digit)."""
    if digits[0] in "17":
        return digits[0]
    return digits[:2] if digits[:2] in _CC2 else digits[:3]


def _trim_groups(s: str, too_long: Callable[[str], bool]) -> str:
    """Drop trailing digit groups (split at a space, dash or dot) while `too_long(s)`; "" if none is left."""
    while s and too_long(s):
        cut = max(s.rfind(" "), s.rfind("-"), s.rfind("."))
        s = s[:cut].rstrip(" .-") if cut > 0 else ""
    return s


def _national(s: str) -> tuple[str, str]:
    """(country code, national digits) of an international number; a "(0)" trunk prefix is not counted."""
    d = _digits(s.replace("(0)", ""))
    d = d[2:] if s.startswith("00") else d
    cc = _cc(d)
    return cc, d[len(cc):]


def _intl_phone(m: re.Match, text: str) -> tuple[int, int] | None:
    def too_long(s: str) -> bool:
        cc, nat = _national(s)
        return len(nat) > _CC_MAX.get(cc, 15 - len(cc))

    s = _trim_groups(m.group(), too_long)
    return (m.start(), m.start() + len(s)) if s and len(_national(s)[1]) >= 7 else None


def _trunk_phone(m: re.Match, text: str) -> tuple[int, int] | None:
    return m.span() if 10 <= len(_digits(m.group())) <= 12 else None


def _phone_keyword(m: re.Match, text: str) -> tuple[int, int] | None:
    """Any 7-15 digit number after a phone keyword (not a date); extra trailing groups are dropped, and so
    is a last group of 1-2 digits after a longer one ("Tel 020 7946 0958 2 tablets")."""
    v = _trim_groups(m.group("v"), lambda s: len(_digits(s.replace("(0)", ""))) > 15)
    groups = v.split(" ")
    if len(groups) > 2 and len(groups[-1]) <= 2 < len(groups[-2]) and len(_digits(v[:v.rfind(" ")])) >= 7:
        v = v[:v.rfind(" ")]
    if len(_digits(v)) < 7 or re.fullmatch(_DATE, v, _FI):
        return None
    return m.start("v"), m.start("v") + len(v)


# --------------------------------------------------------------------------- rules

# a number ends a phone unless a digit, a hex letter or "-code" follows (part of a UUID or a longer code)
_PHONE_END = r"(?![\dA-Fa-f]|-[\dA-Za-z])"

# (type, pattern, validator, strings of which the lower-cased text must hold one for the rule to run)
_RULES: list[tuple[str, re.Pattern, Validator, tuple[str, ...] | None]] = [
    ("EMAIL", re.compile(r"(?<![A-Za-z0-9._%+'-])[A-Za-z0-9][A-Za-z0-9._%+'-]*@"
                         r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])", _F),
     _whole, ("@",)),
    # written to dodge address harvesters: "name [at] example [dot] com", "name(at)example.com"
    ("EMAIL", re.compile(r"(?<![A-Za-z0-9._%+'-])[A-Za-z0-9][A-Za-z0-9._%+'-]*\s*[\[({]at[\])}]\s*"
                         r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.|\s*[\[({]dot[\])}]\s*))+[A-Za-z]{2,24}"
                         r"(?![A-Za-z0-9-])", _FI), _whole, ("[at]", "(at)", "{at}")),
    # -- PHONE
    ("PHONE", re.compile(r"(?<![\w+])(?:\+|(?<!\d)00|\(\+)[1-9]\d{0,2}\)?(?:[ .-]?\(0\))?"
                         r"(?:[ .-]?(?:\(\d{1,5}\)|\d{1,12})){1,6}" + _PHONE_END, _F), _intl_phone, None),
    ("PHONE", re.compile(r"(?<![\w+./-])(?:1[ .-]?)?(?:\([2-9]\d\d\)[ .-]?|[2-9]\d\d[ ./-])[2-9]\d\d[ .-]\d{4}" + _PHONE_END,
                         _F), _whole, None),
    ("PHONE", re.compile(r"(?<![\w+])(?:(?:\+|00)?86[ -]?|\(\+?86\)\s?)?1[3-9]\d(?P<s>[ -]?)\d{4}(?P=s)\d{4}" + _PHONE_END, _F),
     _whole, None),
    # national numbers with a trunk 0: Chinese landlines (010-12345678, (0755) 8765-4321), UK 020 7946 0958
    ("PHONE", re.compile(r"(?<![\w+.-])(?:\(0\d{2,4}\)\s?|0\d{2,4}[ -]?)\d{3,4}[ -]?\d{3,4}(?!-)" + _PHONE_END, _F),
     _trunk_phone, None),
    ("PHONE", re.compile(r"(?:\b(?:tel(?:ephone)?|phone|mobile|mob|cell(?:phone)?|fax|contact\s+(?:number|no\.?)|"
                         r"call)(?![A-Za-z])\.?\s*(?:(?:number|no\.?|#)\s*)?(?:[:：]\s*|at\s+|on\s+)?"
                         r"|(?:联系电话|电话号码|电话|手机号码|手机号|手机|座机|传真|联系方式|固话)[\s:：]*(?:为|是)?\s*)"
                         r"(?P<v>\+?(?:\(\d{1,5}\)|\d{1,12})(?:[ .-]?(?:\(\d{1,5}\)|\d{1,12})){0,6})(?!\d)", _FI),
     _phone_keyword, None),
    # -- ID
    ("ID", re.compile(r"(?<![A-Za-z0-9])(?:\d{6}(?P<s> ?)\d{8}(?P=s)\d{3}[\dXx]|\d{4}(?: \d{4}){3} \d[\dXx])"
                      r"(?![A-Za-z0-9])", _F), _cn_id, None),
    ("ID", re.compile(r"(?<![A-Za-z0-9])\d{15}(?![A-Za-z0-9])", _F), _cn_id, None),
    ("ID", re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])", _F), _ssn, None),
    ("ID", re.compile(r"(?<![\w-])\d{3} \d{3} \d{4}(?![\w-])", _F), _nhs_spaced, None),
    ("ID", re.compile(r"(?:\b(?:SSN|SS#|social\s+security(?:\s+(?:number|no\.?|#))?|NHS(?:\s+(?:number|no\.?|#))?|"
                      r"CHI(?:\s+(?:number|no\.?))|national\s+ID(?:\s+(?:number|no\.?|#))?|"
                      r"ID\s+card(?:\s+(?:number|no\.?|#))?|identity\s+card(?:\s+(?:number|no\.?))?|"
                      r"passport(?:\s+(?:number|no\.?|#))?|driver'?s?\s+licen[cs]e(?:\s+(?:number|no\.?|#))?)"
                      r"(?:(?<=#)|(?![A-Za-z]))\s*[:：#=]?\s*(?:is\s+)?"
                      r"|(?:公民身份号码|身份证号码|身份证号|身份证|护照号码|护照号|驾驶证号|军官证号)[\s:：]*(?:为|是)?\s*)"
                      r"(?P<v>\d{6} ?\d{8} ?\d{3}[\dXx]|\d{4}(?: \d{4}){3} \d[\dXx]|\d{15}"
                      r"|\d{3}[- ]?\d{2}[- ]?\d{4}|\d{3}[- ]?\d{3}[- ]?\d{4}"
                      r"|(?-i:[A-Z]{1,2})\d{6,9}|\d{8,12})(?![A-Za-z0-9])", _FI), _id_keyword, None),
    # -- MRN, INSURANCE, DOB: keyword then value
    ("MRN", re.compile(_MRN_KW + _VALUE, _FI), _keyword_value, None),
    ("INSURANCE", re.compile(_INS_KW + r"(?:(?-i:[A-Z][A-Za-z]+)\s+)?" + _VALUE, _FI), _keyword_value, None),
    ("DOB", re.compile(rf"{_DOB_KW}(?P<v>{_DATE})", _FI), _dob, None),
    ("DOB", re.compile(rf"(?P<v>{_DATE})\s*(?:出生|生人|生(?=[，,。；;、\s)）]|$))", _FI), _dob, ("生",)),
    # -- ADDRESS
    ("ADDRESS", re.compile(_EN_STREET, _F), _street, None),
    ("ADDRESS", re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d{1,6}\b", _FI), _whole, None),
    ("ADDRESS", re.compile(rf"(?<![A-Za-z0-9]){_UK_PC}(?![A-Za-z0-9])", _F), _whole, None),
    ("ADDRESS", re.compile(rf"\b[A-Z][a-zA-Z]+(?:\s[A-Z][a-zA-Z]+)?,\s*{_US_STATES}\s+\d{{5}}(?:-\d{{4}})?(?!\d)", _F),
     _whole, None),
    ("ADDRESS", re.compile(r"(?:\b(?:zip(?:\s*code)?|postal\s+code|post\s*code)(?![A-Za-z])\s*[:：#]?\s*"
                           r"|(?:邮编|邮政编码)[\s:：]*)(?P<v>\d{5}(?:-\d{4})?|\d{6})(?!\d)", _FI), _value, None),
    ("ADDRESS", re.compile(_CN_ADDR, _F), _cn_address, tuple("号组队栋幢座楼元层室户")),
    # -- IP
    ("IP", re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                      r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\d|\.\d)", _F), _ipv4, (".",)),
    ("IP", re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?"
                      r"(?![\w:]|\.\d)", _F), _ipv6, (":",)),
]
_ANY_DIGIT = re.compile(r"\d")
_EXTENSION = re.compile(r"\s*(?:(?:ext\.?|extension|转|分机)\s*|x)\d{1,5}(?!\d)", _FI)  # "ext. 12", "x12", "转801"


def _check_types(types: Iterable[str] | None) -> frozenset[str]:
    if types is None:
        return frozenset(PHI_TYPES)
    if isinstance(types, str):
        types = [t for t in types.split(",") if t.strip()]
    wanted = frozenset(t.strip().upper() for t in types)
    unknown = sorted(wanted - set(PHI_TYPES))
    if unknown:
        raise MedtuneError(f"unknown PHI type(s): {', '.join(unknown)}",
                           hint=f"valid types: {', '.join(PHI_TYPES)}")
    return wanted


def find_phi(text: str, types: Iterable[str] | None = None) -> list[Span]:
    """The PHI spans in `text`, non-overlapping and sorted by start. `types` (names from PHI_TYPES, or
    None for all) filters the result; spans are resolved over all types first (see the module doc)."""
    wanted = _check_types(types)
    if not text:
        return []
    has_digit = _ANY_DIGIT.search(text) is not None
    lower = text.lower()
    candidates: list[tuple[int, int, str]] = []
    for typ, pattern, validate, needs in _RULES:
        if needs is not None and not any(n in lower for n in needs):
            continue
        if not has_digit and typ != "EMAIL":
            continue  # every other rule needs a digit
        for m in pattern.finditer(text):
            span = validate(m, text)
            if span is not None and span[1] > span[0]:
                if typ == "PHONE" and (ext := _EXTENSION.match(text, span[1])):
                    span = (span[0], ext.end())
                candidates.append((span[0], span[1], typ))
    # longest first, then type priority, then leftmost; keep each span that overlaps none kept so far
    candidates.sort(key=lambda c: (c[0] - c[1], _PRIORITY[c[2]], c[0]))
    kept: list[tuple[int, int, str]] = []  # sorted by start, pairwise disjoint
    for s, e, t in candidates:
        i = bisect.bisect_left(kept, (s,))
        if (i == len(kept) or kept[i][0] >= e) and (i == 0 or kept[i - 1][1] <= s):
            kept.insert(i, (s, e, t))
    return [Span(s, e, t, text[s:e]) for s, e, t in kept if t in wanted]


def deidentify(text: str, types: Iterable[str] | None = None) -> tuple[str, collections.Counter]:
    """`text` with each PHI span replaced by "[TYPE]", and a Counter of the spans replaced per type."""
    spans = find_phi(text, types)
    out, pos = [], 0
    for sp in spans:
        out.append(text[pos:sp.start])
        out.append(f"[{sp.type}]")
        pos = sp.end
    out.append(text[pos:])
    return "".join(out), collections.Counter(sp.type for sp in spans)
