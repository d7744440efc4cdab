"""De-identification: find protected health information (PHI) in text and replace it with typed placeholders
or with consistent surrogates.

``deidentify("Patient: John Smith, call +44 20 7946 0958")`` gives ``"Patient: [NAME], call [PHONE]"`` and the
counts per type. The rules are regular expressions (stdlib ``re``, compiled once at import) with checks on
the match (check digits, real dates, digit counts), phone numbers validated by libphonenumber
(``phonenumbers``), and names found from context (titles, "Patient:", signatures, relatives, 姓名/患者/家属
with a common Chinese surname) and from Faker's first-name lists. One type per HIPAA Safe Harbor
identifier that can be found in text:

=========  ==================================================================================================
NAME       people: patients, relatives, clinicians
DATE       dates of birth, admission, discharge and death (after or before their keyword), English, ISO,
           Chinese (also in Chinese numerals) and Taiwanese (民國) forms; "b. 12/03/1950"
AGE        ages over 89 ("93-year-old", "aged 95", "92岁")
PHONE      phone and fax numbers: after a phone keyword any 7-15 digits; elsewhere a number libphonenumber
           says is valid in one of the regions of REGIONS, or any valid number written with +CC / 00CC
EMAIL      e-mail addresses
URL        web addresses (http(s)://, www.)
ID         national ids: Chinese resident ID, US SSN, UK NHS number and NI number, Canadian SIN, India's
           Aadhaar (Verhoeff check), Taiwan ID, HK/Macau travel permits, passports
MRN        the identifier after a record-number keyword (MRN, Encounter #, UHID, CR No., IP No., 病历号, ...)
INSURANCE  the identifier after an insurance keyword (Medicare MBI, Medicaid ID, BC PHN, OHIP, policy
           number, 医保卡号, 健保卡號, ...), with its version code or check characters
ACCOUNT    bank card numbers (Luhn check), and account numbers after their keyword
LICENSE    professional and driver licence numbers after their keyword (NPI, DEA, GMC, 执业证书编码, ...)
VEHICLE    plates and VINs after their keyword, and Chinese plates (粤B·D12345) anywhere
DEVICE     serial numbers and device ids after their keyword (S/N, serial no., IMEI, 序列号, ...)
ADDRESS    street to postcode (English and Chinese; US, UK, Canadian, Australian, Indian postcodes and the
           city before them), PO boxes, postcodes after their keyword
IP         IPv4 (not a version number) and IPv6 addresses
=========  ==================================================================================================

Keyword-led rules replace only the value: ``"MRN: [MRN]"``, ``"DOB: [DATE]"``.

Overlaps: every rule runs on the whole text; where candidate spans overlap, the longest wins, then the
type that comes first in ``_PRIORITY`` (keyword-led types, whose keyword says what the value is, before
pattern types), then the leftmost. A span's type therefore never depends on ``types=``, which only
filters the result.

Limits, plainly: names without a cue and outside the name lists, free-text places without a number (a
town, a ward), dates other than birth/admission/discharge/death, identifiers written in words or in
full-width digits are missed. Rules find what they were written for and miss what is written
differently: a de-identified corpus must still be reviewed (read a random sample) before it is shared.
See docs/deid.md for the measured recall on text the rules were not written against.

Why one file of ~1,200 lines: every rule competes in one overlap resolution and the rules share their building
blocks (dates, keywords, fills); most of the length is the patterns themselves, in sections (checks, building
blocks, validators, phones, names, rules, scanning hints, replacing and surrogates).
"""

from __future__ import annotations

import bisect
import collections
import functools
import datetime as _dt
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from medtune.errors import MedtuneError

PHI_TYPES: tuple[str, ...] = ("NAME", "DATE", "AGE", "PHONE", "EMAIL", "URL", "ID", "MRN", "INSURANCE", "ACCOUNT",
                               "LICENSE", "VEHICLE", "DEVICE", "ADDRESS", "IP")
_ALIASES = {"DOB": "DATE", "FAX": "PHONE"}  # DOB: the type's name before dates of admission, discharge, death

# Tie-break for overlapping spans of equal length: a keyword says what the value is, so keyword-led
# types come first; then validated IDs; then the pattern-only types.
_PRIORITY = {t: i for i, t in enumerate(("MRN", "INSURANCE", "LICENSE", "DEVICE", "VEHICLE", "DATE", "AGE", "ACCOUNT",
                                         "ID", "PHONE", "EMAIL", "URL", "IP", "ADDRESS", "NAME"))}


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


# Verhoeff's dihedral-group tables (multiplication, permutation, inverse), as published with the scheme.
_VH_D = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
         [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
         [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
         [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]
_VH_P = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
         [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
         [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8]]


def verhoeff_ok(s: str) -> bool:
    """True when a digit string ends in its Verhoeff check digit (India's Aadhaar uses the scheme)."""
    c = 0
    for i, ch in enumerate(reversed(s)):
        c = _VH_D[c][_VH_P[i % 8][int(ch)]]
    return c == 0


def is_valid_aadhaar(s: str) -> bool:
    """True for 12 digits, the first 2-9, with a valid Verhoeff check digit."""
    return len(s) == 12 and s.isdigit() and s[0] not in "01" and verhoeff_ok(s)


def luhn_ok(s: str) -> bool:
    """True when a digit string passes the Luhn (mod 10) check of bank cards."""
    total = 0
    for i, ch in enumerate(reversed(s)):
        x = int(ch) * (2 if i % 2 else 1)
        total += x - 9 if x > 9 else x
    return total % 10 == 0


# Taiwan ID: the letter's two-digit code (A=10 ... Z=33 in the ministry's order), then 9 digits.
_TW_LETTERS = {ch: 10 + i for i, ch in enumerate("ABCDEFGHJKLMNPQRSTUVXYWZIO")}


def is_valid_tw_id(s: str) -> bool:
    """True for a Taiwan national ID (A123456789): letter, 1/2 (or 8/9), 8 digits, weighted sum mod 10 = 0."""
    if len(s) != 10 or s[0] not in _TW_LETTERS or not s[1:].isdigit() or s[1] not in "1289":
        return False
    code = _TW_LETTERS[s[0]]
    digits = [code // 10, code % 10] + [int(c) for c in s[1:]]
    return sum(d * w for d, w in zip(digits, (1, 9, 8, 7, 6, 5, 4, 3, 2, 1, 1))) % 10 == 0


def is_valid_hkid(s: str) -> bool:
    """Hong Kong identity card: 1-2 letters, 6 digits, check character (0-9 or A) by weighted sum mod 11."""
    m = re.fullmatch(r"([A-Z]{1,2})(\d{6})\s?[(（]?([0-9A])[)）]?", s.upper())
    if not m:
        return False
    head = m.group(1).rjust(2)
    vals = [36 if c == " " else ord(c) - 55 for c in head] + [int(c) for c in m.group(2)]
    total = sum(v * w for v, w in zip(vals, range(9, 1, -1)))
    check = (11 - total % 11) % 11
    return m.group(3) == ("A" if check == 10 else str(check))


def is_valid_iban(s: str) -> bool:
    """IBAN: country, 2 check digits, 11-30 letters/digits; the ISO 13616 mod-97 check is 1."""
    t = re.sub(r"[\s-]", "", s).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", t):
        return False
    return int("".join(str(int(c, 36)) for c in t[4:] + t[:4])) % 97 == 1


def is_valid_au_medicare(s: str) -> bool:
    """Australian Medicare card: 10 digits (and an optional issue number), first 2-6, weighted check digit 9th."""
    d = _digits(s)
    if len(d) not in (10, 11) or d[0] not in "23456":
        return False
    return sum(int(c) * w for c, w in zip(d[:8], (1, 3, 7, 9, 1, 3, 7, 9))) % 10 == int(d[8])


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
_AGE_90 = r"(?:9\d|1[01]\d|12[0-5])"  # the ages Safe Harbor removes
_NO_DIGIT_NEEDED = ("岁", "歲")  # needs of the one digit rule that also runs on text without a digit (Chinese numerals)
_DATE = (
    rf"(?:{_Y4}\s*年\s*{_M}\s*月(?:\s*{_D}\s*[日号])?"  # 1984年3月12日, 1984年3月
    rf"|{_Y4}[-/.]{_M}[-/.]{_D}(?!\d)"  # 1984-03-12, 1984/3/12
    rf"|\d{{1,2}}[-/.]\d{{1,2}}[-/.](?:{_Y4}|\d\d)(?!\d)"  # 12/03/1984, 03.12.84 (validated)
    rf"|{_D}{_ORD}[ -](?:of\s+)?{_MON}[ ,-]*(?:{_Y4}|'?\d\d)(?!\d)"  # 12 March 1984, 12-Mar-84
    rf"|{_MON}\s*{_D}{_ORD},?\s*{_Y4}(?!\d)"  # March 12, 1984
    rf"|{_MON},?\s*{_Y4}(?!\d)"  # March 1984
    rf"|{_Y4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)"  # 19840312
    rf"|[〇零一二三四五六七八九]{{4}}\s*年\s*[一二三四五六七八九十]{{1,2}}\s*月(?:\s*[一二三四五六七八九十]{{1,3}}\s*[日号])?"
    r"|(?:中華|中华)?民[國国]\s*\d{1,3}\s*年\s*\d{1,2}\s*月(?:\s*\d{1,2}\s*日)?)"  # 一九八四年三月十二日, 民國68年5月12日
)

# Identifier after a keyword: an optional upper-case prefix word, then tokens holding a digit, joined by
# - . / or by a space before a 3-5 digit group ("123 4567").
_VALUE = (r"(?P<v>(?:(?-i:[A-Z]{1,5})(?:[ /-]|\.(?=\d))){0,2}[A-Za-z0-9]*\d[A-Za-z0-9]*(?:[-./][A-Za-z0-9]+)*"
          r"(?: \d{3,5}(?![A-Za-z0-9-]))*(?: \d{1,2}(?![\w-])(?!\.\d)(?!\s+[A-Za-z]))?(?:[ -](?-i:[A-Z]{1,2})(?![A-Za-z0-9]))?)")
_FILL = r"(?:\s*(?:\(\s*)?(?:#|no\.?|nr\.?|num(?:ber)?\.?|id)?(?:\s*\))?\s*[:：#=\-–]?\s*(?:is\s+|was\s+|为|是)?\s*)"
_FILL_CN = r"(?:\s*(?:No\.?\s*)?(?:[(（][A-Za-z]{1,4}[)）])?\s*[:：#=]?\s*(?:为|是)?\s*)"

_NUM_WORD = r"(?:number|no\.?|nr\.?|#|ID)"
_KW_END = r"(?:(?<=#)|(?![A-Za-z]))"  # a word keyword must not run into letters; "Policy #W123" may
# a hospital's initials before No.: "RXH No.", "QEH number"
_HOSP_NO = (r"(?-i:H(?:(?<=(?<![A-Za-z])[A-Z]H)|(?<=(?<![A-Za-z])[A-Z]{2}H)|(?<=(?<![A-Za-z])[A-Z]{3}H)))(?=\s)"
            rf"\s+(?:no\.?|number|#){_KW_END}{_FILL}")
_MRN_KW = (r"(?:\b(?:MRN|M\.R\.N\.?|MR\s*#|UR\s*(?:number|no\.?)|hosp\.?\s*(?:number|no\.?)|"
           r"(?:medical|hospital|health)\s+record(?:\s+(?:number|no\.?|#))?|med\s*rec(?:ord)?\s*(?:no\.?|#)|"
           r"record\s+(?:number|no\.?)|(?:patient|pt\.?)\s+(?:ID|identifier|number|no\.?|#)|"
           r"hospital\s+(?:number|no\.?|ID|#)|chart\s*(?:#|number|no\.?)|case\s+(?:number|no\.?)|"
           r"admission\s+(?:number|no\.?)|enc(?:ounter)?\.?\s*(?:number|no\.?|ID|#)|accession\s+(?:number|no\.?)|UHID|URN|UR\s*no\.?|(?-i:UR)(?=\s*[:#]?\s*(?-i:[A-Z])?\d)|reg(?:istration)?\.?\s*ID|HN\s*(?:no\.?|number|#)|"
           r"CR\s*(?:no\.?|number|#)|IP\s*(?:no\.?|number|#)|OP\s*(?:no\.?|number|#)|IPD\s*(?:no\.?|#)|OPD\s*(?:no\.?|#)|"
           r"acct/MRN|case\s+ID|visit\s+(?:number|no\.?|ID)|FIN)"
           rf"{_KW_END}{_FILL}"
           r"|(?:病历号码|病历编号|病历号|病案号码|病案号|住院号码|住院号|住院ID|门诊号码|门诊号|门诊ID|就诊号|就诊卡号|"
           r"就诊ID|诊疗卡号|登记号|检查号|檢查號|检验号|檢驗號|影像号|影像號|病人ID|患者ID|患者编号|病人编号|ID号|病歷號碼|病歷號|病歷编号|住院號|門診號|病案號|就診號|急诊号|急診號|急诊编号|急診編號|HN號碼|HN号码|HN號|HN号)"
           rf"{_FILL_CN})")
# bare "insurance", "policy", "Medicare" only before a colon: "insurance 2023 renewal" has no number
_INS_KW = (r"(?:\b(?:(?:health\s+)?insurance(?:\s+(?:policy|card|member|plan))?\s*" + _NUM_WORD + r"|"
           r"(?:health\s+)?(?:insurance|policy|medicare|medicaid)(?=\s*[:：\-–])|"
           r"policy\s*" + _NUM_WORD + r"|member(?:ship)?\s*" + _NUM_WORD + r"|subscriber\s+" + _NUM_WORD + r"|"
           r"group\s+(?:number|no\.?|#)|(?:medicare|medicaid|health)(?:\s+card)?\s*" + _NUM_WORD + r"|"
           r"(?:medicare|medicaid|health)\s+card|beneficiary\s+(?:ID|number)|health\s+plan\s+" + _NUM_WORD + r"|"
           r"(?:medicare\s+)?MBI|medicaid\s+(?:ID|number|no\.?|#)|(?:BC\s+)?PHN|personal\s+health\s+number|OHIP(?:\s+" + _NUM_WORD + r")?|"
           r"RAMQ|MSP|health\s+card(?:\s+" + _NUM_WORD + r")?|DVA(?:\s+file)?(?:\s+" + _NUM_WORD + r")?|"
           r"policy\s+(?:ID|no\.?)|TPA\s+(?:ID|card|no\.?)|ESIC?(?:\s+" + _NUM_WORD + r")?|"
           r"claim\s+" + _NUM_WORD + r"|insurance\s+ID|insured['’]?s?\s+(?:ID|I\.D\.)(?:\s+(?:number|no\.?))?|EHIC|GHIC|(?:EHIC/)?GHIC\s+card|EHIC\s+card|"
           r"DVA\s+(?:gold|white|orange)\s+card(?:\s+" + _NUM_WORD + r")?|HCN|health\s+number|"
           r"NDIS(?:\s+" + _NUM_WORD + r")?|participant\s+(?:number|no\.?|#|ID)|"
           r"Ayushman(?:\s+Bharat)?(?:\s+card)?(?:\s+" + _NUM_WORD + r")?|PM-?JAY(?:\s+" + _NUM_WORD + r")?|"
           r"CGHS(?:\s+card)?(?:\s+" + _NUM_WORD + r")?|medicare(?=\s+\d))"
           rf"{_KW_END}{_FILL}"
           r"|(?:医保卡号|医保号|医保卡|醫保卡號|医疗保险号|社保卡号|社保号|社会保障卡号|保险单号|保单号|保险号|新农合证号|新农合号|参保号|"
           r"健保卡號|健保卡号|健保號|保險單號|保單號|商业保险号|合作医疗证号)"
           rf"{_FILL_CN})")
_DOB_KW = (r"(?:\b(?:DOB|D\.O\.B\.?|date\s+of\s+birth|birth\s*date|birthday|born(?:\s+(?:on|in))?(?:\s+the)?|b\.(?=\s*(?:\d|[A-Z][a-z]{2}))|"
           r"(?:date\s+of\s+|)(?:admission|discharge|death)(?:\s+date)?|admitted(?:\s+(?:on|in))?|"
           r"discharged(?:\s+(?:home|on|in))*|died(?:\s+(?:on|in))?|deceased|DOD|expired(?:\s+on)?|"
           r"pronounced(?:\s+(?:dead|deceased|life\s+extinct))?(?:\s+by\s+(?:Dr\.?\s+)?[A-Za-z]+)?(?:\s+at\s+\d{4}(?:\s*h(?:rs?)?)?)?(?=\s+on\s)(?:\s+on)|pronounced\s+dead(?:\s+(?:on|at))?|adm\.?|DOA|d/c(?:\s+date)?|time\s+of\s+death|TOD)(?![A-Za-z])"
           r"\s*(?:\([^)\n]{0,16}\))?[\s:：,=(\-–]*(?:is\s+|was\s+|on\s+|at\s+)?"
           r"(?:\d{1,2}[:.h]\d{2}(?:\s*(?:am|pm|hrs?|h))?\s*(?:on\s+|,\s*)?)?"
           r"|(?:出生日期|出生年月日|出生年月|出生时间|出生時間|生日|出生于|出生於|出生在|生于|生於|出生(?=\s*[:：])|"
           r"(?:入院|出院|死亡|入院就诊|手术)(?:日期|时间|時間)|死亡于|死亡於|入院于|出院于|卒于|(?:入院|出院|死亡)(?=\s*[:：]))"
           r"[\s:：]*(?:为|是)?\s*)")

# English street address: number, 1-4 capitalised words (or 5th, 42nd), a street type.
_STREET_TYPES = (r"(?:Street|St|Road|Rd|Avenue|Ave|Av|Lane|Ln|Drive|Dr|Boulevard|Blvd|Way|Court|Ct|Place|Pl|"
                 r"Terrace|Terr|Crescent|Cres|Close|Square|Sq|Parkway|Pkwy|Highway|Hwy|Circle|Cir|Trail|Row|Grove|"
                 r"Gardens|Mews|Walk|Hill|Broadway|Gate|Loop|Parade|Quay|Plaza|Alley|Expressway|Freeway|Turnpike)")
_UNIT = r"(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor|Room|Rm|#)"
_UK_PC = r"(?:[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]? \d[ABD-HJLNP-UW-Z]{2}|GIR 0AA)"
_US_STATES = (r"(?:AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|"
              r"NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR|GU|VI|AS|MP|MH|FM|PW|AA|AE|AP)")
_CA_PC = r"(?:[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z] ?\d[ABCEGHJ-NPRSTV-Z]\d)"
_CA_PROV = r"(?:AB|BC|MB|NB|NL|NS|NT|NU|ON|PE|QC|SK|YT)"
_AU_STATES = r"(?:NSW|VIC|QLD|WA|SA|TAS|ACT|NT)"
# a postcode after a city: US state + ZIP, UK, Canadian (province optional), Australian state + 4 digits,
# Indian 6-digit PIN
_SEP = r"(?:,[ \t]*|[ \t]+)"
_POSTAL = (rf"(?:{_SEP}{_US_STATES}\s+\d{{5}}(?:-\d{{4}})?|{_SEP}{_UK_PC}|{_SEP}(?:{_CA_PROV}{_SEP})?{_CA_PC}"
           rf"|{_SEP}{_AU_STATES}{_SEP}\d{{4}}|{_SEP}(?:-\s*)?\d{{6}}|{_SEP}\d{{3}}\s\d{{3}})(?![A-Za-z0-9])")
_POSTAL_RULE = rf"(?P<city>[A-Z](?<![A-Za-z'’-][A-Z])(?-i:[a-z][A-Za-z'’-]*(?:[ \t]+[A-Z][a-z][A-Za-z'’-]*){{0,2}})){_POSTAL}"
_ADDR_START = re.compile(r"(?:\d|#|[A-Z]{1,2}-\d|sector\b|(?:flat|apt|apartment|unit|suite|studio|h\.?\s?no|house|plot|door|p\.?\s?o\.?|"
                         r"building|bldg|floor|level|lot)\b)", re.IGNORECASE)
_SENTENCE_STOP = re.compile(r"(?<!Apt)(?<!Ste)(?<!St)(?<!Rd)(?<!No)(?<!Dr)(?<!Ave)(?<!Ln)(?<!Blvd)(?<!Bldg)"
                            r"[.;:!?](?:\s|$)|[：；。]")
_NOT_AFTER_UNIT = r"(?<!flat )(?<!unit )(?<!apt )(?<!studio )(?<!suite )(?<!room )(?<!no\. )(?<!no )(?<!# )"
_NOT_ADDR_START = re.compile(
    rf"{_DATE}|\b{_NOT_AFTER_UNIT}\d{{1,3}}\s*(?:y/?o|yrs?|years?(?:\s+old)?|(?-i:[MF]))\b|\baged?\s+\d{{1,3}}\b|,\s*\d{{2,3}}\s*,", _FI)
_NOT_CITY = frozenset("Batch Lot Order Ref Code Room Ward Bed Version Build Serial Account Policy Card Patient Chart "
                      "Tel Phone Fax Mobile Call Record Number No Id Claim Member Group Case Visit Item".split())
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

def _trie(words: Iterable[str]) -> str:
    """One regex for a list of literal words, as a trie: Python's `re` tries the branches of an alternation
    one by one, so a hundred cue words cost a hundred tries at each word start; a trie costs a few. A space
    in a word matches any run of white space."""
    tree: dict = {}
    for w in words:
        node = tree
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        alts = [(r"\s+" if ch == " " else re.escape(ch)) + emit(node[ch]) for ch in sorted(k for k in node if k)]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if "" in node else body

    return "(?:" + emit(tree) + ")"


_PROVINCES = ("北京|天津|上海|重庆|河北|山西|辽宁|吉林|黑龙江|江苏|浙江|安徽|福建|江西|山东|河南|湖北|湖南|广东|海南|"
              "四川|贵州|云南|陕西|甘肃|青海|台湾|內蒙古|内蒙古|广西|西藏|宁夏|新疆|香港|澳门|臺灣|台灣|臺北|台北|新北|桃園|臺中|台中|臺南|台南|高雄")
_PROVINCES_TRIE = _trie(_PROVINCES.split("|"))
_HAN = "\u4e00-\u9fff"
_CN_NUM = "0-9一二三四五六七八九十百零〇"
_CN_CITY = rf"(?:[{_HAN}]{{1,7}}?(?:市|州|盟|地区))"
_CN_DISTRICT = rf"(?:[{_HAN}]{{1,7}}?(?:区|區|县|縣|旗|市))"
_CN_TOWN = rf"(?:[{_HAN}]{{1,7}}?(?:镇|鎮|乡|鄉|街道))"
_CN_UNIT = rf"(?:[{_HAN}A-Za-z]{{0,8}}?[0-9A-Za-z{_CN_NUM}]+(?:号楼|號樓|栋|棟|幢|座|楼|樓|单元|單元|层|層|室|号|號|户|戶|弄)(?:之[0-9]{{1,3}})?)"
_CN_TRIGGERS = ("住址", "地址", "家住", "现住", "住在", "住于", "居住在", "居住于", "居住於", "居住", "来自", "户籍地", "户籍", "位于",
                "現住", "戶籍", "來自", "位於")
_CN_ADDR = (
    # start: a province; or after an address word; or, with a city or district, after punctuation
    rf"(?:{_PROVINCES_TRIE}(?:省|市|壮族自治区|回族自治区|维吾尔自治区|自治区|特别行政区)?"
    rf"{_CN_CITY}?{_CN_DISTRICT}?{_CN_TOWN}?"
    rf"|(?<=[址住在于於自地籍])(?:{'|'.join(f'(?<={w})' for w in _CN_TRIGGERS)})(?![在于於为是])[：:]?\s*(?:\d{{3,6}}\s?)?{_CN_CITY}?{_CN_DISTRICT}?{_CN_TOWN}?"
    rf"|(?:(?<=[：:，,。；;\s（(])|^)(?:\d{{3,6}}\s?)?(?:{_CN_CITY}{_CN_DISTRICT}?|{_CN_DISTRICT}){_CN_TOWN}?)"
    # road (not 消化道, 呼吸道, ...) and number, then building / unit / room
    rf"(?:[{_HAN}A-Za-z0-9]{{1,10}}?(?:大道|大街|路|街|巷|(?<!消化)(?<!呼吸)(?<![尿胆食阴肠气泪])道|胡同|弄|里|村)(?:[{_CN_NUM}]{{1,3}}段)?"
    rf"(?:[{_CN_NUM}]+(?:[-之][0-9]+)?[号號](?:之[0-9]+)?|[{_CN_NUM}]+[组队組隊])"
    rf"{_CN_UNIT}*"
    # or a housing estate with at least a building or room number
    rf"|[{_HAN}A-Za-z0-9]{{1,10}}?(?:小区|花园|家园|公寓|大厦|新村|苑|广场|大院|社区){_CN_UNIT}+)"
    r"(?:(?<=[楼樓栋棟幢座元层層])[0-9]{1,5}(?:室|号|號|房)?)?"
)
# a Chinese address with its postcode: province, then up to 30 characters, then 6 digits ("...b座 463608")
_CN_POSTAL_ADDR = rf"{_PROVINCES_TRIE}[{_HAN}A-Za-z0-9]{{2,30}}?\s?(?<![A-Za-z])[1-8]\d{{5}}(?![\d(（])"
_CN_LEAD = re.compile(rf"^(?:.*?(?:{'|'.join(_CN_TRIGGERS)}))?[在于於：:\s]*")
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
    digits = sum(c.isdigit() for c in v)
    return m.span("v") if digits >= 5 or (digits >= 4 and sum(c.isalnum() for c in v) >= 8) else None


def _date_ok(s: str) -> bool:
    """A DATE candidate is a real calendar date (a typo'd future year still counts: the keyword says what it is)."""
    if re.search(r"[A-Za-z〇零一二三四五六七八九民]", s):
        return True  # month names, Chinese numerals, 民國 years: the pattern bounds day and year
    nums = re.findall(r"\d+", s)
    if len(nums) == 3 and len(nums[0]) == 3:  # ROC year: 113/03/05
        return _valid_date(int(nums[0]) + 1911, int(nums[1]), int(nums[2]), past=False)
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


_VERSION_WORDS = frozenset(("version", "ver", "ver.", "v", "release", "build", "firmware", "fw", "software", "sw", "app",
                            "版本", "版本号", "固件"))


def _cn_address(m: re.Match, text: str) -> tuple[int, int] | None:
    """Start after a leading address word (家住, 住址, ...) the match may hold, or at a province name."""
    s = m.group()
    cut = _CN_LEAD.match(s).end()
    p = _CN_PROVINCE_RE.search(s, 0, 12)
    if p and p.start() > cut and not any(c.isdigit() for c in s[cut:p.start()]):
        cut = p.start()  # a leading postcode ("33477 新北...") stays in the address
    return m.start() + cut, m.end()


def _postal_address(m: re.Match, text: str) -> tuple[int, int] | None:
    """City and postcode, with the street before them when a house number or unit word starts it."""
    city = m.group("city").split()[0]
    if city in _NOT_CITY or city in _NOT_NAMES - {"Park", "Hill", "Mount", "St", "Saint"}:
        return None
    # look back on the same line, within the sentence (up to 12 words), for a house number or unit word
    lo = max(0, m.start() - 120, text.rfind("\n", 0, m.start()) + 1)
    pre_start = lo
    for stop in _SENTENCE_STOP.finditer(text, lo, m.start()):
        pre_start = stop.end()
    for stop in _NOT_ADDR_START.finditer(text, pre_start, m.start()):
        pre_start = stop.end()  # a date or an age is not where the address starts
    close = text.rfind(")", pre_start, m.start("city"))
    if close >= 0:  # nor inside a bracket closed before it: "(..., NI no. QQ 12 34 56 C) of 9 Mill Lane, ..."
        pre_start = close + 1
    words = list(re.finditer(r"\S+", text[pre_start:m.start()]))[-12:]
    start = m.start("city")
    for tok in words:
        if _ADDR_START.match(tok.group()):
            at = pre_start + tok.start()
            before = text[max(0, at - 20):at].split()
            if before and before[-1].lower().strip(".,:;(") in _NOT_BEFORE_STREET:
                continue
            start = at
            break
    if start == m.start("city") and re.search(r"\d{3}[ \t]\d{3}$", m.group()) and not text[:start].rstrip().endswith(","):
        return None  # "Samaritans 116 123": a 3+3 digit PIN alone after a word is more often a number
    return start, m.end()


def _ipv4(m: re.Match, text: str) -> tuple[int, int] | None:
    before = text[max(0, m.start() - 12):m.start()].lower().rstrip(":： ")
    words = before.split()
    if (words and words[-1].rstrip(":") in _VERSION_WORDS) or before.endswith(("v", "版本", "版本号", "固件")):
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


# --------------------------------------------------------------------------- phones (libphonenumber)

# Regions a national number (no +CC) is tried in, in order: the locales medtune's users write in. Canada
# shares the US plan (NANP); a number valid in one of these is a phone.
REGIONS = ("US", "GB", "CN", "AU", "IN", "HK", "TW", "SG", "MO")


def _trim_groups(s: str, too_long: Callable[[str], bool]) -> str:
    """Drop trailing digit groups (split at a space, dash or dot) while `too_long(s)`; "" if none is left."""
    while s and too_long(s):
        cut = max(s.rfind(" "), s.rfind("-"), s.rfind("."))
        s = s[:cut].rstrip(" .-") if cut > 0 else ""
    return s


def _regions_for(d: str) -> tuple[str, ...]:
    """The REGIONS whose national numbers can have these digits (length and first digit), to spare parsing."""
    n, first = len(d), d[0]
    out = []
    if (n == 10 and first in "23456789") or (n == 11 and first == "1"):
        out.append("US")
    if first == "0" and 10 <= n <= 11:
        out += ["GB", "AU"]
    if (n == 11 and first == "1") or (first == "0" and 10 <= n <= 12):
        out.append("CN")
    if (n == 10 and first in "6789") or (first == "0" and n == 11):
        out.append("IN")
    if n == 8 and first in "2345689":
        out += ["HK", "SG", "MO"]
    if first == "0" and 9 <= n <= 10:
        out.append("TW")
    return tuple(r for r in REGIONS if r in out)


@functools.lru_cache(maxsize=65536)
def _phone_number(s: str) -> bool:
    """True if libphonenumber finds `s` a phone number (valid; with +CC: possible)."""
    import phonenumbers

    intl = s.lstrip("(").startswith(("+", "00"))
    candidate = "+" + s.lstrip("(")[2:] if s.lstrip("(").startswith("00") else s
    for region in ((None,) if intl else _regions_for(_digits(s))):
        try:
            num = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(num) or (intl and phonenumbers.is_possible_number(num)):
            return True
    return False


def _phone(m: re.Match, text: str) -> tuple[int, int] | None:
    """A phone number libphonenumber accepts, trailing digit groups that belong to the next words dropped
    ("020 7946 0958 2 tablets"). Bare digit runs need 10+ digits (8-digit lot and order numbers are valid
    local numbers in Hong Kong and Singapore)."""
    s, start = m.group().rstrip(" .-/"), m.start()
    if s.startswith("(") and ")" not in s:
        s, start = s[1:], start + 1  # an opening bracket with no closing one is not part of the number
    if _DOTTED_QUAD.fullmatch(s) or _SSN_LAYOUT.fullmatch(s):
        return None  # an IPv4 address; the SSN layout ddd-dd-dddd
    if s[-3:-2] == "-" or s[-2:-1] == "-":
        if re.fullmatch(r"\d+(?:-\d+)+", s):
            return None  # a dashed code with a last group of 1-2 digits: NDC 0406-0552-01, REF 5998-10-02
    while s:
        digits = _digits(s)
        if len(digits) < 7:
            return None
        bare = digits == s
        if len(digits) <= 15 and (not bare or len(digits) >= 10) and not _DATE_RE.fullmatch(s) and _phone_number(s):
            if (d := _DATE_RE.match(s)) and not s[d.end():d.end() + 1].isdigit():
                return None  # a date, then its hour: "2024-04-02 14:30"
            return start, start + len(s)
        cut = max(s.rfind(" "), s.rfind("-"), s.rfind("."), s.rfind("/"))
        if cut <= 0:
            return None
        s = s[:cut].rstrip(" .-/(")
    return None


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


# --------------------------------------------------------------------------- other validators


def _aadhaar(m: re.Match, text: str) -> tuple[int, int] | None:
    return m.span() if is_valid_aadhaar(_digits(m.group())) else None


def _tw_id(m: re.Match, text: str) -> tuple[int, int] | None:
    return m.span() if is_valid_tw_id(m.group().upper()) else None


def _capital_id(m: re.Match, text: str) -> tuple[int, int] | None:
    if m.group("tw"):
        return m.span() if is_valid_tw_id(m.group("tw")) else None
    if m.group("hk"):
        return m.span() if is_valid_hkid(m.group("hk")) else None
    return m.span()  # PAN: the layout is the check


def _bare_insurance(m: re.Match, text: str) -> tuple[int, int] | None:
    if m.group("on"):
        return m.span() if luhn_ok(_digits(m.group())) else None
    return m.span() if is_valid_au_medicare(m.group()) else None


_ID_BEFORE = re.compile(r"(?:身份证|身分證|身份證|身份号码|身份號碼|证件|ID|SSN|NHS|Aadhaa?r|passport|护照|護照|IHI|ABHA|TFN|CRN|HKID|居留)\S{0,4}\s*[:：]?\s*$", re.IGNORECASE)


def _card(m: re.Match, text: str) -> tuple[int, int] | None:
    if _ID_BEFORE.search(text, max(0, m.start() - 14), m.start()):
        return None  # after an ID keyword the number is that ID, whatever its Luhn sum
    d = _digits(m.group())
    return m.span() if 13 <= len(d) <= 19 and luhn_ok(d) and len(set(d)) > 2 else None


def _age(m: re.Match, text: str) -> tuple[int, int] | None:
    return m.span("v") if 90 <= int(m.group("v")) <= 125 else None


def _code_value(m: re.Match, text: str) -> tuple[int, int] | None:
    """A code after its keyword (licence, plate, serial): 4+ letters/digits, at least 2 of them digits."""
    v = m.group("v").rstrip(".-")
    if sum(c.isalnum() for c in v) < 4 or sum(c.isdigit() for c in v) < 2:
        return None
    return m.start("v"), m.start("v") + len(v)


def _url(m: re.Match, text: str) -> tuple[int, int] | None:
    v = m.group().rstrip(".,;:!?'\")]}>")
    return (m.start(), m.start() + len(v)) if "." in v else None


# --------------------------------------------------------------------------- names

# Name lists from Faker's locale providers (read once, on first use): first names of the English locales,
# Chinese surnames of zh_CN and zh_TW (single and compound).
_NAME_LISTS: dict[str, frozenset[str]] = {}


def _names(kind: str) -> frozenset[str]:
    if not _NAME_LISTS:
        import importlib

        first: set[str] = set()
        for loc in ("en_US", "en_GB", "en_IN", "en_CA", "en_AU"):
            try:
                first.update(importlib.import_module(f"faker.providers.person.{loc}").Provider.first_names)
            except (ImportError, AttributeError):
                pass
        surnames: set[str] = set()
        for loc in ("zh_CN", "zh_TW"):
            surnames.update(importlib.import_module(f"faker.providers.person.{loc}").Provider.last_names)
        _NAME_LISTS["first"] = frozenset(n for n in first if len(n) > 2) - _NOT_NAMES
        _NAME_LISTS["first_all"] = frozenset(n for n in first if len(n) > 2)
        _NAME_LISTS["zh_surnames"] = frozenset(surnames)
    return _NAME_LISTS[kind]


# Capitalised words that follow a name cue but are not names, and first-name-list words that are mostly
# ordinary words in notes.
_NOT_NAMES = frozenset(
    "The This That He She His Her They Them Their It Patient Pt Name No None Not Unknown Yes Is Was Has Had Have "
    "Denies Reports Presented Admitted Discharged Male Female Date Dob Age Sex Home Alone At In On To From With And Or "
    "Of For By Notified Informed Called Aware Present Absent Declined Today Yesterday Tomorrow Morning Evening Night "
    "January February March April May June July August September October November December Jan Feb Mar Apr Jun Jul Aug "
    "Sep Sept Oct Nov Dec Monday Tuesday Wednesday Thursday Friday Saturday Sunday Will Bill Grant Chase Hope Faith Joy "
    "Mark Rich Summer Autumn Winter Spring Dawn Glen Ray Sunny Guy Pat Angel Amber Crystal Ruby Pearl Rose Iris Lily "
    "Daisy Ivy Holly Hazel Olive Sage Stone Cliff Dale Brook Heath Lane Street Road Avenue Drive Hill Park Ward Clinic "
    "Hospital Medical Health Care Center Centre Unit Service Services General Memorial University St Saint Mount".split())
# after a cue or title any capitalised word may be a name ("Ms. Ward", "Patient name: Crystal Gordon"), except these
_NOT_NAMES_AFTER_CUE = frozenset(
    "The This That He She His Her They Them Their It Patient Pt Name No None Not Unknown Yes Is Was Has Had Have "
    "Denies Reports Presented Admitted Discharged Male Female Date Dob Age Sex Home Alone At In On To From With And Or "
    "Of For By Notified Informed Called Aware Present Absent Declined Today Yesterday Tomorrow Morning Evening Night "
    "January February March April June July August September October November December Monday Tuesday Wednesday "
    "Thursday Friday Saturday Sunday Clinic Hospital Medical Health Care Center Centre Unit Service Services "
    "General Memorial University Team Department Dept Office Surgery Practice Emergency Pharmacy Veteran "
    "Claimant Resident Client Injured Deceased Widow Widower Retired Consultant Registrar Sincerely Regards Re For "
    "Dear Kind Thanks Thank Please See Also Contact Called Seen Brought Referred Reviewed Screened Ordering".split())
# an institution word ends the words after a cue: "GP, Meadowbank Surgery" is a place, not a name
_INSTITUTION = frozenset("Surgery Clinic Hospital Practice Centre Center Pharmacy Medical Lodge School College University "
                         "Station Trust Services Service".split())
# specialties after a role cue: "Consultant Geriatrician"
_SPECIALTY_END = ("ician", "ologist", "iatrist", "iatrician", "ographer", "apist", "surgeon", "ist")
_NAME_TOKEN = r"(?:Mohd\.|Md\.|(?!(?:Jr|Sr)\b)[A-Z\u00c0-\u00d6\u00d8-\u00de\u0100-\u017f\u1e00-\u1eff](?:[a-z\u00df-\u00f6\u00f8-\u00ff\u0100-\u017f\u1e00-\u1eff]+(?:['’][A-Z][a-z]+)?|['’][A-Z][a-z]+)(?:[A-Z][a-z]+)?(?:-[A-Z][a-z]+)?|[A-Z]\.)"
_PARTICLE = r"(?:van|von|der|den|de|del|della|di|da|dos|das|du|le|la|bin|binti|bint|ibn|al|el|ap|ter|ten)"
_NAME_SEQ = rf"(?-i:{_NAME_TOKEN}(?: (?:{_PARTICLE} ){{0,2}}{_NAME_TOKEN}){{0,3}}(?:,?\s+(?:Jr|Sr)\.?|\s+(?:II|III|IV)\b)?)"
_TITLE = r"(?:Dr|Mr|Mrs|Ms|Miss|Mx|Prof|Professor|Nurse|Sister|Sr|Smt|Shri|Sri|Kum)"

# single-word cues (lower case; matched case-insensitively): then a name
_CUE_WORDS = _trie((
    "name patient pt signed signature physician surgeon consultant carer caregiver guardian mother father son daughter "
    "wife husband partner brother sister spouse grandson granddaughter grandmother grandfather attendant informant "
    "proxy gp pcp witness witnessed niece nephew aunt uncle cousin stepson stepdaughter stepmother stepfather dtr dau "
    "friend neighbor neighbour fiance fiancee fiancé fiancée landlord landlady flatmate housemate spr registrar sho "
    "fy1 fy2 intern pharmacist midwife physio physiotherapist dietitian interpreter chaplain constable officer "
    "paramedic claimant veteran widow widower sincerely regards prescriber attending ordering surname forename forenames "
    "applicant dad mum mom grandma grandpa").split()
    + ["patient name", "patient's name", "pt name", "electronically signed by", "attending physician", "next of kin",
       "emergency contact", "contact person", "family physician", "social worker", "ordering physician",
       "ordering provider", "ordering clinician", "ordering doctor", "wife of", "son of", "daughter of", "husband of"]
    + [f"{a} {b}" for a in ("first", "given", "last", "family", "middle") for b in ("name", "names")])
# verbs before "by": "seen by", "brought by"
_BY_VERBS = _trie((
    "seen reviewed screened brought called accompanied escorted dictated transcribed prescribed verified checked "
    "authorised authorized approved examined assessed interpreted performed reported collected consented visited "
    "referred signed witnessed ordered requested").split())
_TITLE_TRIE = _trie("Dr Mr Mrs Ms Miss Mx Prof Professor Nurse Sister Sr Smt Shri Sri Kum".split())
# the cue tries first, the rarer forms after them: at most word starts each branch fails on its first letter
_EN_CUE = (r"(?:\b(?:" + _CUE_WORDS + r"(?:\s+as\s+(?:per|on)\s+[A-Za-z]+)?|"
           r"(?:" + _BY_VERBS + r"|brought\s+in|discussed\s+with|handed\s+over\s+to)\s+by"
           r"(?:\s+(?-i:(?:[a-z]+|pt's|patient's)\s+){0,3})?|"
           r"(?:driver|rider)(?=\s*[:：])|contact(?=\s*:)|re(?=\s*:)|[WSDC]/o|(?-i:I)(?<![\w,] I)(?<!\wI),)"
           r"(?:\s*\([^)\n]{0,20}\))?\s*[:：,\-–]?[ \t]*(?:" + _TITLE_TRIE + r"\.?[ \t]+)?"
           r"|\b" + _TITLE_TRIE + r"\.?[ \t]+)")
_HAN_NAME_STOP = frozenset("因于於在是的了和与與及等为為被将對对从從向到入出来來去说說诉訴述主自今昨男女岁歲年月日院诊診科室床号號"
                           "患病者人员員性别別无無有未已曾经經现現既往体體状狀况況行签簽字名同意陪代述称稱讲講之送带帶随隨给給跟把将")
_ZH_CUE = (r"(?:申请人|申請人|个案|個案|姓名|病人姓名|患者姓名|病患姓名|病患|患者|病人|家属|家屬|联系人|聯絡人|紧急联系人|緊急聯絡人|签名|簽名|医生签名|醫師簽名|"
           r"主治医师|主治醫師|主治医生|主治醫生|经治医师|住院医师|记录者|記錄者|记录人|护士|護士|儿子|女儿|兒子|女兒|丈夫|妻子|"
           r"之子|之女|之夫|之妻|母亲|母親|父亲|父親|患儿|陪同人|代理人|监护人|監護人|其女|其子|其妻|其夫|其母|其父|配偶|"
           r"交警|民警|警员|警員|骑士|騎士|委托人|委託人|伤者|傷者|死者|被照顾者|被照顧者|照顾者|照顧者|陪同者|代办人|代辦人)"
           r"[\s:：]*")
_ZH_TITLES = ("先生|女士|小姐|医生|醫生|医师|醫師|大夫|护士|護士|主任|教授|老师|老師|太太|阿姨|院长|院長|婆婆|伯伯|阿婆|阿伯|"
              "爷爷|爺爺|奶奶|师傅|師傅|姑娘")
# a role label ending in a person word, then a colon: 接诊医生：, 处方审核药师：, 取药人：, 护理员：, 死者：
_ZH_ROLE_CUE = (r"(?:(?:医生|醫生|医师|醫師|药师|藥師|护士|護士|护理师|護理師|护师|護師|技师|技師|治疗师|治療師|"
                r"营养师|營養師|教师|教師|员|員|人|者|民)[ \t]*[:：][ \t]*)")
# words before a title that make it a role, not a name: 责任护士, 处方医师, 谈话医生
_ZH_ROLE_PREFIX = frozenset(("责任 處方 处方 谈话 談話 主治 接诊 接診 随访 隨訪 转诊 轉診 值班 管床 床位 经治 經治 住院 门诊 門診 急诊 急診 "
                             "会诊 會診 审核 審核 开立 開立 签字 簽字 主管 实习 實習 进修 進修 规培 專科 专科 社区 社區 家庭 全科 麻醉 "
                             "手术 手術 主刀 助手 带教 帶教 上级 上級 出诊 出診 首诊 首診 复诊 複診 初诊 初診 责任 責任 主诊 主診 "
                             "药剂 藥劑 影像 超声 超聲 检验 檢驗 病理 护理 護理 康复 康復 营养 營養 心理 治疗 治療").split())
_HAN_C = "\u4e00-\u9fff"


def _en_cue_name(m: re.Match, text: str) -> tuple[int, int] | None:
    """Capitalised words after a name cue, without the not-a-name words at either end."""
    if m.group("v") is None:
        return _caps_cue_name(m, text)
    if _RE_CUE.match(text, m.start()):
        return _re_name(m, text)
    words = m.group("v").split()
    if words and (words[0].strip(".,") in _NOT_NAMES_AFTER_CUE or words[0].strip(".,").lower().endswith(_SPECIALTY_END)):
        return None
    if len(words) > 1 and words[-1].strip(".,") in _INSTITUTION:
        return None
    while len(words) > 1 and (words[0].strip(".,") in _TITLE_WORDS or words[0].strip(".,").lower().endswith(_SPECIALTY_END)):
        words.pop(0)
    while words and words[-1].strip(".,") in _NOT_NAMES_AFTER_CUE:
        words.pop()
    if not words or all(len(w.rstrip(".")) == 1 for w in words):
        return None
    start = text.index(words[0], m.start("v"))
    end = text.index(words[-1], start) + len(words[-1])
    return start, end


def _listed_name(m: re.Match, text: str) -> tuple[int, int] | None:
    """A first name from the lists followed by a capitalised surname: "Grace Whitfield"."""
    first, mid, last = m.group("f"), m.group("mid"), m.group("l")
    if first not in _names("first"):
        return None
    if mid:  # a middle name from the lists ("Margaret Rose Ellis"), else the second word is the surname
        if mid in _names("first_all") and last not in _NOT_NAMES and last not in _NOT_NAMES_AFTER_CUE:
            return m.start(), m.end("l")
        return None if mid in _NOT_NAMES else (m.start(), m.end("mid"))
    if last in _NOT_NAMES:
        return None
    return m.start(), m.end("l")


_CREDENTIALS = _trie("MD DO RN NP PA-C PharmD MBBS MBChB FRCP FRCS FRACP FRCPC FRACGP MRCP MRCGP DNP APRN CNS LPN BSN "
                      "MSN DDS PhD RPh CNM CRNA LCSW MSW RD DPM ND".split())
_FIELD_AFTER = (r"(?:\d{1,3}[ \t]*(?:y(?:rs?|ears?)?\b|yo\b|y/o|/?[ \t]?[MF]\b|,|\.(?!\d))"
                r"|(?:DOB|DOA|D\.O\.B|MRN|UHID|NHS|PHN|IHI|URN?|CR\s+No|IP\s+No|Hosp|born|b\.|aged?|age)\b)")
# what follows a name, from its first character (a comma, a space or a tab, consumed so that re scans for those
# characters by itself): a credential, a role after a comma, a demographic or record field after a comma, an
# age and sex ("63M")
_NAME_AFTER = (rf"[ \t,](?<=[A-Za-z.][ \t,])(?:(?<=,)(?:[ \t]+(?:{_CREDENTIALS})\b|[ \t]*(?:{_CREDENTIALS}|pharmacist|nurse|"
               r"physician|midwife|registrar|consultant|physiotherapist|dietitian|social\s+worker)\b|[ \t]*" + _FIELD_AFTER + ")"
               rf"|(?<=[ \t])(?:[ \t]*(?:{_CREDENTIALS})\b|[ \t]*,[ \t]*{_FIELD_AFTER}|[ \t]*\d{{1,3}}[ \t]?/?(?-i:[MF])(?![\w°])))")


_NAME_SEQ_END: list[re.Pattern] = []
# capitalised clinical words: "Type 2 Diabetes Mellitus, 92 yrs" is not a name
_CLINICAL_WORDS = frozenset("Diabetes Mellitus Disease Syndrome Disorder Cancer Carcinoma Failure Infection Fracture "
                            "Injury Pain Type Stage Grade Class Score Scale Level Test Scan Study Trial Protocol Therapy "
                            "Treatment Procedure Day Week Month Year Dose Tablet Capsule Injection Solution Acute Chronic "
                            "Severe Mild Moderate Left Right Bilateral Heart Lung Kidney Liver Brain Blood Renal Cardiac "
                            "Pulmonary Hepatic Chest Abdominal Lumbar Spine Knee Hip Bed Room Floor Total Normal Abnormal "
                            "Positive Negative Primary Secondary Arterial Venous Artery Vein Heart Attack Stroke "
                            "Pneumonia Sepsis Asthma Hypertension Dementia Obesity Anaemia Anemia Hepatitis Arthritis".split())
_CLINICAL_ENDS = ("itis", "osis", "emia", "aemia", "oma", "pathy", "ectomy", "otomy", "plasty", "scopy", "graphy", "gram",
                  "ology", "iasis", "algia", "uria", "ism")
_TITLE_WORDS = frozenset("Dr Mr Mrs Ms Miss Mx Prof Professor Nurse Sister Sr Smt Shri Sri Kum Master".split())


def _name_before_field(m: re.Match, text: str) -> tuple[int, int] | None:
    """Capitalised words just before a credential or a demographic field (the match), without leading
    not-a-name words; at least two words, one of them not an initial. The field is found first and the
    name looked for behind it: far fewer places to try than every capital letter."""
    if not _NAME_SEQ_END:
        _NAME_SEQ_END.append(re.compile(rf"(?<![A-Za-z.'’])(?<![A-Za-z]-)(?P<v>{_NAME_SEQ})\Z", _F))
    n = _NAME_SEQ_END[0].search(text, max(0, m.start() - 80), m.start())
    if n is None:
        return None
    m = n
    words = m.group("v").split()
    lead = 0
    while lead < len(words) and (words[lead].strip(".,") in _NOT_NAMES_AFTER_CUE or words[lead].strip(".,") in _NOT_NAMES
                                 or words[lead].strip(".,") in _TITLE_WORDS):
        lead += 1
    words = words[lead:]
    if len(words) < 2 or all(len(w.rstrip(".")) == 1 for w in words) or words[-1].strip(".,") in _INSTITUTION:
        return None
    if any(w.strip(".,") in _CLINICAL_WORDS or w.strip(".,").lower().endswith(_CLINICAL_ENDS) for w in words):
        return None
    start = text.index(words[0], m.start("v"))
    return start, m.end("v")


_CAPS_NOT_SURNAME = frozenset("ECG EKG CXR MRI USS ICU MRN DOB NHS CRP INR PMH HPI ROS NAD NKDA BMI ABG FBC LFT UNE "
                              "ADL IVF OGD ERCP CABG COPD CKD HTN DKA PRN STAT NOTE PLAN IMPRESSION FINDINGS HISTORY "
                              "CLINICAL REPORT EXAM TECHNIQUE COMPARISON INDICATION RESULT RESULTS DIAGNOSIS".split())


def _caps_surname(m: re.Match, text: str) -> tuple[int, int] | None:
    """LAST, First: after a separator (| : tab, line start) or with a listed first name."""
    v = m.group("v")
    sur, _, rest = v.partition(",")
    given = rest.split()
    if sur in _CAPS_NOT_SURNAME or not given:
        return None
    before = text[max(0, m.start() - 12):m.start()].rstrip(" \t")
    at_field = not before or before[-1] in "|:：\n\t" or re.search(r"\b(?:pt|patient|name|re)\s*$", before, re.IGNORECASE)
    if not (at_field or given[0].capitalize() in _names("first")):
        return None
    if given[0].isupper() and len(given[0]) > 1 and not at_field:
        return None
    return m.span("v")


# field labels and clinical abbreviations that end an all-capital name after a cue
_CAPS_STOP = _CAPS_NOT_SURNAME | frozenset("DOB AGE SEX MRN HKID NHS ID UR URN DOA PHN IC NRIC UHID IP OP CR MALE FEMALE "
                                           "DNR NFR DNACPR NIL NONE UNKNOWN ADMITTED DECEASED REFUSED NOT FOR NO TO AND OR THE OF IN ON AT "
                                           "WITH YES IS WAS HAS".split())


_CAPS_CUE = re.compile(r"(?:(?P<sur>surname|last\s+name|family\s+name)|patient(?:'s)?\s+name|pt\s+name|"
                       r"name(?:\s+as\s+(?:per|on)\s+[a-z]+)?|patient|pt)\s*(?P<colon>[:：])?[ \t]*"
                       r"(?:(?:mr|mrs|ms|miss|dr|mx)\.?[ \t]+)?", re.IGNORECASE)
_RE_CUE = re.compile(r"re\s*:", re.IGNORECASE)


def _caps_cue_name(m: re.Match, text: str) -> tuple[int, int] | None:
    """An all-capital surname after a name cue (patient, name, surname), with given names in capitals or title
    case ("Patient: ZHOU Mingyuan", "Name: MS. POOJA AGARWAL"); one word alone only after a surname cue
    ("Surname NGUYEN"), and after the others only with a colon ("Patient NOT FOR CPR" is not a name)."""
    cue = _CAPS_CUE.fullmatch(text, m.start(), m.start("caps"))
    if cue is None or not (cue.group("sur") or cue.group("colon")):
        return None
    words = m.group("caps").split(" ")
    kept = []
    for w in words:
        if w in _CAPS_STOP:
            break
        kept.append(w)
    if not kept:
        return None
    if len(kept) == 1 and not cue.group("sur"):
        return None
    start = m.start("caps")
    return start, start + len(" ".join(kept))


_SUBJECT_WORDS = frozenset("Summary Letter Referral Report Results Result Appointment Request Follow Review Update Clinic "
                           "Discharge Admission Transfer Consultation Assessment Plan Medication Medications Invoice "
                           "Claim Complaint Query Urgent Your Our New Patient Re".split())


def _re_name(m: re.Match, text: str) -> tuple[int, int] | None:
    """The subject line of a letter or fax ("RE: Ibrahim Al-Sayed"): two or more capitalised words that are not
    a subject ("RE: Discharge Summary") or a clinical term."""
    raw = m.group("v").split()
    while raw and raw[0].strip(".,") in _TITLE_WORDS:
        raw.pop(0)  # "Re: Mr Geoffrey Pemberton-Hale": the title stays
    words = [w.strip(".,") for w in raw]
    if len(words) < 2 or all(len(w) == 1 for w in words):
        return None
    if any(w in _SUBJECT_WORDS or w in _NOT_NAMES_AFTER_CUE or w in _CLINICAL_WORDS or w in _INSTITUTION
           or w.lower().endswith(_CLINICAL_ENDS) for w in words):
        return None
    return text.index(raw[0], m.start("v")), m.end("v")


def _last_first(m: re.Match, text: str) -> tuple[int, int] | None:
    """Title-case "Last, First" in a record line: the first name must be a listed one (not "Glucose, Fasting")."""
    given = m.group("v").partition(",")[2].split()[0]
    return m.span("v") if given in _names("first_all") else None


def _zh_name(m: re.Match, text: str) -> tuple[int, int] | None:
    """A Chinese surname from the lists and a given name of 1-2 characters that are not function words."""
    sur, given = m.group("s"), m.group("g") or ""
    if sur not in _names("zh_surnames"):
        return None
    if len(given) == 3:  # a double surname (楊陳秀英) only in a labelled field: "被照顧者：楊陳秀英，"
        end = m.start("s") + 4
        labelled = text[m.start("s") - 1:m.start("s")] in ":：" and not (end < len(text) and "\u4e00" <= text[end] <= "\u9fff")
        if not (labelled and given[0] in _names("zh_surnames")):
            given = given[:2]
    while given and given[-1] in _HAN_NAME_STOP:
        given = given[:-1]
    if given and given[0] in _HAN_NAME_STOP:
        return None
    if not given and not m.group("t"):
        return None
    return m.start("s"), m.start("s") + len(sur) + len(given)


def _zh_titled_name(m: re.Match, text: str) -> tuple[int, int] | None:
    """The longest surname + given name (0-2 characters, no function words) just before a title (先生, 医生)."""
    pre, end = m.group("pre"), m.end("pre")
    if pre[-2:] in _ZH_ROLE_PREFIX:
        return None
    surnames = _names("zh_surnames")
    for n in range(len(pre), 0, -1):
        cand = pre[-n:]
        for k in (2, 1):
            sur, given = cand[:k], cand[k:]
            if len(sur) == k and sur in surnames and not any(c in _HAN_NAME_STOP for c in given):
                return end - n, end
    return None


def _zh_surname_alt() -> str:
    return "|".join(sorted(_names("zh_surnames"), key=len, reverse=True))


# --------------------------------------------------------------------------- rules

# a number ends a phone unless a digit, a hex letter or "-code" follows (part of a UUID or a longer code)
_PHONE_END = r"(?![\dA-Fa-f]|-[\dA-Za-z])"
_VALUE_CODE = r"(?P<v>(?-i:[A-Z0-9][A-Za-z0-9]*)(?:[-/·• ](?-i:[A-Z0-9][A-Za-z0-9]*)){0,4})"
_CODE_FILL = r"(?:\s*(?:\(\s*)?(?:#|no\.?|nr\.?|num(?:ber)?\.?)?(?:\s*\))?\s*[:：#=\-–]?\s*(?:is\s+)?)"
_CN_PLATE = (r"(?<![A-Za-z0-9])[京津沪滬渝冀豫云雲辽遼黑湘皖鲁魯新苏蘇浙赣贛鄂桂甘晋晉蒙陕陝吉闽閩贵貴粤粵青藏川宁寧琼瓊]"
             r"[A-Z][·•\- ]?[A-Z0-9]{5,6}(?![A-Za-z0-9])")

# (type, pattern, validator, strings of which the lower-cased text must hold one for the rule to run)
_RULES: list[tuple[str, re.Pattern, Validator, tuple[str, ...] | None]] = [
    ("EMAIL", re.compile(r"(?<![A-Za-z0-9._%+'-])[A-Za-z0-9][A-Za-z0-9._%+'-]*@"
                         r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])", _F),
     _whole, ("@",)),
    # written to dodge address harvesters: "name [at] example [dot] com", "name(at)example.com"
    ("EMAIL", re.compile(r"(?<![A-Za-z0-9._%+'-])[A-Za-z0-9][A-Za-z0-9._%+'-]*\s*[\[({]at[\])}]\s*"
                         r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.|\s*[\[({]dot[\])}]\s*))+[A-Za-z]{2,24}"
                         r"(?![A-Za-z0-9-])", _FI), _whole, ("[at]", "(at)", "{at}")),
    ("URL", re.compile(r"(?<![\w@/.])(?:https?://|www\.)[^\s<>\"'，。；、）)（(\u3000-\u9fff\uff00-\uffef]+", _FI), _url, ("http", "www.")),
    # -- PHONE: candidates of digits and separators, checked by libphonenumber
    ("PHONE", re.compile(r"(?:\b(?:tel(?:ephone)?|phone|ph|mobile|mob|cell(?:phone)?|fax|contact\s+(?:number|no\.?)|"
                         r"call)(?![A-Za-z])\.?\)?\s*(?:(?:number|no\.?|#)\s*)?(?:[:：]\s*|at\s+|on\s+)?"
                         r"|(?:联系电话|聯絡電話|电话号码|電話號碼|电话|電話|手机号码|手机号|手机|手機|座机|传真|傳真|联系方式|聯絡方式|固话)"
                         r"[\s:：]*(?:为|是)?\s*)"
                         r"(?P<v>\+?(?:\(\d{1,5}\)|\d{1,12})(?:[ .-]?(?:\(\d{1,5}\)|\d{1,12})){0,6})(?!\d)", _FI),
     _phone_keyword, None),
    # -- ID
    ("ID", re.compile(r"\d(?<![A-Za-z0-9]\d)(?:\d{5}(?P<s> ?)\d{8}(?P=s)\d{3}[\dXx]|\d{3}(?: \d{4}){3} \d[\dXx])"
                      r"(?![A-Za-z0-9])", _F), _cn_id, None),
    ("ID", re.compile(r"\d(?<![A-Za-z0-9]\d)\d{14}(?![A-Za-z0-9])", _F), _cn_id, None),
    ("ID", re.compile(r"\d(?<![\w-]\d)\d{2}-\d{2}-\d{4}(?![\w-])", _F), _ssn, None),
    ("ID", re.compile(r"\d(?<![\w-]\d)\d{2} \d{3} \d{4}(?![\w-])", _F), _nhs_spaced, None),
    ("ID", re.compile(r"[2-9](?<![\w-][2-9])\d{3}(?P<s>[ -]?)\d{4}(?P=s)\d{4}(?![\w-])", _F), _aadhaar, None),
    # one scan for the ids that start with a capital letter: Taiwan ID (check digit), Hong Kong ID (check
    # character), India's PAN (3 letters, the holder-type letter, a letter, 4 digits, a letter)
    ("ID", re.compile(r"(?<![A-Za-z0-9])(?:(?P<tw>[A-Z][1289]\d{8})(?![A-Za-z0-9])|(?P<hk>[A-Z]{1,2}\d{6}\s?[(（][0-9A][)）])"
                      r"|[A-Z]{3}[PCHFATBLJG][A-Z]\d{4}[A-Z](?![A-Za-z0-9]))", _F), _capital_id, None),
    ("ID", re.compile(r"(?:\b(?:SSN|SS#|social\s+security(?:\s+(?:number|no\.?|#))?|NHS(?:\s+(?:number|no\.?|#))?|"
                      r"(?-i:CHI)(?:\s+(?:number|no\.?))?|national\s+ID(?:\s+(?:number|no\.?|#))?|NI\s+(?:number|no\.?)|"
                      r"national\s+insurance(?:\s+(?:number|no\.?))?|NINO|SIN|social\s+insurance(?:\s+(?:number|no\.?))?|"
                      r"Aadhaa?r(?:\s+(?:number|no\.?|card))?|UID|PAN|TFN|tax\s+file\s+(?:number|no\.?)|"
                      r"(?:Centrelink\s+)?CRN|IHI|ABHA(?:\s+(?:number|no\.?|card|ID))?|HKID(?:\s+(?:number|no\.?))?|"
                      r"ID\s+card(?:\s+(?:number|no\.?|#))?|identity\s+card(?:\s+(?:number|no\.?))?|"
                      r"passport(?:\s+(?:number|no\.?|#))?|(?:travel\s+)?permit(?:\s+(?:number|no\.?))?)"
                      r"(?:(?<=#)|(?![A-Za-z]))\s*[:：#=]?\s*(?:is\s+)?"
                      r"|(?:公民身份号码|身份证号码|身份证号|身份证|身分證字號|身分證號|身分證|身份證號碼|身份證|护照号码|护照号|護照號碼|"
                      r"居留證號碼?|居留证号码?|居留證|居留证|香港身份證號碼?|香港身份证号码?|"
                      r"港澳通行证号?|往来港澳通行证号?|回乡证号?|回鄉證號?|往来内地通行证号?|台胞证号?|军官证号|证件号码|证件号)"
                      r"[\s:：]*(?:为|是)?\s*)"
                      r"(?P<v>(?-i:[A-Z]{1,2})\d{6}\s?[(（][0-9A][)）]|\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}|\d{2}-\d{4}-\d{4}-\d{4}"
                      r"|\d{3}[- ]?\d{3}[- ]?\d{3}(?-i:[A-Z])|\d{6} ?\d{8} ?\d{3}[\dXx]|\d{4}(?: \d{4}){3} \d[\dXx]|\d{15}|\d{4}[ -]?\d{4}[ -]?\d{4}"
                      r"|\d{3}[- ]?\d{2}[- ]?\d{4}|\d{3}[- ]?\d{3}[- ]?\d{3,4}|(?-i:[A-Z]{2})\s?\d{6}\s?(?-i:[A-Z])|(?-i:[A-Z]{2})(?: \d\d){3} (?-i:[A-Z])"
                      r"|(?-i:[A-Z]{1,2})\d{6,10}|(?-i:[A-Z]{5})\d{4}(?-i:[A-Z])|\d{8,12})(?![A-Za-z0-9])", _FI),
     _id_keyword, None),
    # -- MRN, INSURANCE, DATE, AGE: keyword then value
    ("MRN", re.compile(_MRN_KW + _VALUE, _FI), _keyword_value, None),
    ("MRN", re.compile(_HOSP_NO + _VALUE, _FI), _keyword_value, None),
    ("INSURANCE", re.compile(_INS_KW + r"(?:(?-i:[A-Z][a-z][A-Za-z]*)\s+)?" + _VALUE, _FI), _keyword_value, None),
    ("DATE", re.compile(rf"{_DOB_KW}(?P<v>{_DATE}|(?<!\d)1[01]\d/{_M}/{_D}(?!\d)"
                        rf"|(?<!\d)\d{{1,2}} \d{{1,2}} (?:19|20)\d\d(?!\d))", _FI), _dob, None),
    # a date before its event, an hour between them allowed; before a death also a few words ("经抢救无效")
    ("DATE", re.compile(rf"(?P<v>{_DATE})\s*(?:\d{{1,2}}\s*[时時点點:：]\s*(?:\d{{1,2}}\s*分?)?\s*)?"
                        rf"(?:出生|生人|入院|出院|(?:[{_HAN}]{{0,8}}?(?:死亡|去世|逝世|病逝))|生(?=[，,。；;、\s)）]|$))", _FI), _dob,
     ("生", "院", "死", "世", "逝")),
    # only 90-125 is written out (speed: most numbers fail at their first digits); the validator checks again
    # the keyword form and the number forms apart: the keyword's "a" would make every "a" a place to try
    ("AGE", re.compile(r"(?:\b(?:aged?|age\s*[:：]|ages)\s*)(?P<v>" + _AGE_90 + r")(?![\d%]|\.\d)", _FI),
     lambda m, t: _age_either(m, t), None),
    ("AGE", re.compile(r"(?<!\d)(?P<v2>" + _AGE_90 + r")(?=\s*-?\s*(?:years?|yrs?|y)\s*-?\s*(?:old|o\b)|\s*y/o|\s*yo\b"
                       r"|\s*(?:years?|yrs?)\b(?!\s+(?:ago|of|since|later|before|after|follow))|\s*(?:周岁|岁|歲|週歲)"
                       r"|\s?y(?![A-Za-z/]))"  # "(95Y)", "95 y F"
                       # age and sex: "94F", "92/M", "91 M," (not a temperature: "T 101F")
                       r"|(?<![\w.])" + _NOT_AFTER_UNIT + r"(?P<v3>" + _AGE_90 + r")(?![\d])(?=\s?/?\s?(?-i:[MF])(?![\w°]))", _FI),
     lambda m, t: _age_either(m, t), None),
    # ages in Chinese numerals: 九十二岁, 一百零三歲 (90-125 by construction)
    ("AGE", re.compile(r"(?<![一二三四五六七八九十百零])(?P<v>九十[一二三四五六七八九]?|一百(?:零[一二三四五六七八九]|一?十[一二三四五六七八九]?"
                       r"|二十[一二三四五]?)?)(?=\s*(?:周岁|岁|歲|週歲))", _F), _value, _NO_DIGIT_NEEDED),
    # -- ACCOUNT
    ("ACCOUNT", re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,3})?(?![A-Za-z0-9])", _F),
     lambda m, t: m.span() if is_valid_iban(m.group()) else None, None),
    ("ACCOUNT", re.compile(r"\d(?<![\w-]\d)(?:\d{3}(?P<s>[ -]?)\d{4}(?P=s)\d{4}(?P=s)\d{1,7}(?![\w-])"
                           r"|(?<=3)[47]\d{2}[ -]?\d{6}[ -]?\d{5}(?![\w-]))", _F), _card, None),
    ("ACCOUNT", re.compile(r"(?:\b(?:(?:bank\s+)?account(?:\s+(?:number|no\.?|#))?|acct\.?(?:\s*(?:no\.?|#))?|A/C(?:\s*no\.?)?|"
                           r"IBAN|card(?:\s+(?:number|no\.?|on\s+file))?|visa|mastercard|amex|maestro|credit\s+card|debit\s+card)(?![A-Za-z])" + _CODE_FILL +
                           rf"|(?:银行卡号|銀行卡號|银行账号|銀行帳號|银行账户|账号|帳號|账户|帳戶|(?<![保险險])卡号|(?<![保险險])卡號|退费账户)[\s:：]*"
                           rf"(?:[{_HAN}]{{2,8}}\s*)?)"
                           r"(?P<v>(?-i:[A-Z]{2}\d{2})(?:[ -]?(?-i:[A-Z0-9]{4})){2,7}(?:[ -]?(?-i:[A-Z0-9]{1,3}))?"
                           r"|(?-i:[A-Z]{2}\d{2})?[0-9][0-9 -]{6,30}[0-9])(?![\w-])", _FI), _keyword_value, None),
    # -- LICENSE, VEHICLE, DEVICE: keyword then code
    ("LICENSE", re.compile(r"(?:\b(?:driver'?s?\s+licen[cs]e|driving\s+licen[cs]e|DL|licen[cs]e|NPI|DEA|GMC|NMC|CPSO|"
                           r"AHPRA|GPhC|HCPC|prov(?:ider)?\.?\s*(?:number|no\.?|#)|(?:medical\s+|professional\s+)?(?:registration|reg\.?)(?=\s*(?:number|no\b|#))|medical\s+council|board\s+certification)"
                           r"(?:\s+(?:number|no\.?|#|ID))?(?:(?<=#)|(?![A-Za-z]))" + _CODE_FILL +
                           r"|(?:医师执业证书编码|醫師執業證書編碼|执业证书编码|执业证书编号|執業證書編號|执业证书号|执业证号|執業證號|资格证书编号|资格证号|"
                           r"驾驶证档案编号|駕駛證檔案編號|驾驶证号码|驾驶证号|驾驶证|駕照號碼|駕照|驾照号|护士执业证号|註冊編號|注册编号|醫師證書|医师证书|醫師證號|醫師證書字號)[\s:：]*"
                           rf"(?:[{_HAN}]{{1,2}}字第)?)" + _VALUE_CODE, _FI),
     _code_value, None),
    ("VEHICLE", re.compile(r"(?:\b(?:(?:licen[cs]e\s+|number\s+|registration\s+)?plate(?:\s+(?:number|no\.?|#))?|"
                           r"vehicle(?:\s+(?:reg(?:istration)?|number|no\.?|#|plate|ID))*|(?:reg(?:istration)?\.?)(?!\s*(?:number|no\b|#))|"
                           r"rego|VIN|tag)(?:(?<=#)|(?![A-Za-z]))" + _CODE_FILL +
                           r"|(?:车牌号码|车牌号|車牌號碼|車牌號|车牌|車牌|车号|車號|车辆识别代号|自用車|自用车|機車|机车|汽車|汽车)[\s:：]*)"
                           + _VALUE_CODE, _FI),
     _code_value, None),
    ("VEHICLE", re.compile(_CN_PLATE, _F), _whole, None),
    ("VEHICLE", re.compile(r"(?<![A-Za-z0-9])(?:AN|AP|AR|AS|BR|CG|CH|DD|DL|DN|GA|GJ|HP|HR|JH|JK|KA|KL|LA|LD|MH|ML|MN|MP|MZ|NL|OD|OR|"
                           r"PB|PY|RJ|SK|TN|TR|TS|UK|UP|WB)(?P<s>[ -]?)\d{1,2}(?P=s)[A-Z]{1,3}(?P=s)\d{4}(?![A-Za-z0-9])", _F),
     _whole, None),
    # Medicare (Australia, check digit; spaced as on the card: run together it is as likely a phone number) and
    # Ontario health card with its version code (Luhn), without a keyword
    ("INSURANCE", re.compile(r"(?<![\w-])(?:(?P<on>\d{4}[ -]\d{3}[ -]\d{3}[ -][A-Z]{2})"
                             r"|[2-6]\d{3} \d{5} \d(?: ?\d(?![\w-]))?)(?![\w-])", _F), _bare_insurance, None),
    ("DEVICE", re.compile(r"(?:\b(?:serial(?:\s+(?:number|no\.?|#))?|S/N|SN|device(?:\s+(?:ID|serial|number|no\.?|#))+|"
                          r"IMEI|UDI|model\s+and\s+serial|implant\s+(?:ID|number|no\.?))(?:(?<=#)|(?![A-Za-z]))" + _CODE_FILL +
                          r"|(?:序列号|序列號|序号|序號|设备编号|設備編號|设备号|器械编号|机身号|IMEI)[\s:：]*)" + _VALUE_CODE, _FI),
     _code_value, None),
    # -- ADDRESS
    ("ADDRESS", re.compile(_EN_STREET, _F), _street, None),
    ("ADDRESS", re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d{1,6}\b", _FI), _whole, None),
    ("ADDRESS", re.compile(r"[A-PR-UWYZ](?<![A-Za-z0-9][A-PR-UWYZ])(?:[A-HK-Y]?\d[A-Z\d]? \d[ABD-HJLNP-UW-Z]{2}|(?<=G)IR 0AA)"
                           r"(?![A-Za-z0-9])", _F), _whole, None),
    ("ADDRESS", re.compile(r"[ABCEGHJ-NPRSTVXY](?<![A-Za-z0-9][A-Z])(?!(?<=E)[1-4] ?V[1-5] ?M[1-6])"
                           r"\d[ABCEGHJ-NPRSTV-Z] ?\d[ABCEGHJ-NPRSTV-Z]\d(?![A-Za-z0-9])", _F),
     _whole, None),
    ("ADDRESS", re.compile(rf"[A-Z](?<![A-Za-z0-9_][A-Z])[a-zA-Z]+(?:\s[A-Z][a-zA-Z]+)?,\s*{_US_STATES}\s+\d{{5}}(?:-\d{{4}})?(?!\d)", _F),
     _whole, re.compile(rf",(?<=[A-Za-z],)\s*{_US_STATES}\s+\d{{5}}", _F)),
    ("ADDRESS", re.compile(rf"[A-Z](?<![A-Za-z0-9_][A-Z])[a-zA-Z]+(?:\s[A-Z][a-zA-Z]+)?,?\s+{_AU_STATES},?\s+\d{{4}}(?!\d)", _F), _whole,
     re.compile(rf"[,\s](?<=[A-Za-z][,\s])(?:(?<=,)\s+|(?<!,)\s*){_AU_STATES},?\s+\d{{4}}(?!\d)", _F)),
    ("ADDRESS", re.compile(r"(?:\b(?:zip(?:\s*code)?|postal\s+code|post\s*code|pin(?:\s*code)?)(?![A-Za-z])\s*[:：#-]?\s*"
                           r"|(?:邮编|邮政编码|郵遞區號)[\s:：]*)(?P<v>\d{5}(?:-\d{4})?|\d{6}|\d{3}\s?\d{3}|\d{4})(?!\d)", _FI),
     _value, None),
    # only where a road and its number, or a housing estate, is written (a scan for those words first)
    ("ADDRESS", re.compile(_CN_ADDR, _F), _cn_address,
     re.compile(rf"(?:大道|大街|路|街|巷|道|胡同|弄|里|村)(?:[{_CN_NUM}]{{1,3}}段)?[{_CN_NUM}]+(?:[-之][0-9]+)?[号號组队組隊]"
                r"|小区|花园|家园|公寓|大厦|新村|苑|广场|大院|社区")),
    ("ADDRESS", re.compile(_POSTAL_RULE, _F), _postal_address, re.compile(rf"[, \t](?<=[A-Za-z'’-][, \t])[ \t]*(?:{_US_STATES}\s+\d{{5}}|{_UK_PC}|(?:{_CA_PROV}{_SEP})?{_CA_PC}"
                                                                     rf"|{_AU_STATES}{_SEP}\d{{4}}|(?:-\s*)?\d{{6}}|\d{{3}}\s\d{{3}})(?![A-Za-z0-9])", _F)),
    ("ADDRESS", re.compile(_CN_POSTAL_ADDR, _F), _cn_address, None),
    # -- IP
    ("IP", re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
                      r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\d|\.\d)", _F), _ipv4, re.compile(r"\d\.\d{1,3}\.\d{1,3}\.\d")),
    ("IP", re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?"
                      r"(?![\w:]|\.\d)", _F), _ipv6, re.compile(r":[0-9A-Fa-f]{0,4}:")),
    # last: a candidate inside a span already found by a rule that would win it is not parsed (find_phi)
    # its first character consumed, then the rest of "(+|00|(+?)? digit": re's own scan skips letters and spaces
    ("PHONE", re.compile(r"[+(\d](?<![\w+./-][+(\d])(?:(?<=\+)\d|(?<=\()\+?\d|(?<=0)0\d|(?<=\d))"
                         r"(?:[\d()\-/]|\.(?=\d)| (?=[\d(])){5,22}\d" + _PHONE_END, _F),
     _phone, None),
]
_PHONE_PATTERN = _RULES[-1][1]


# --------------------------------------------------------------------------- scanning speed

def _literal_prefixes(pattern: re.Pattern, k: int = 4, cap: int = 2000) -> list[str] | None:
    """Lower-case strings of which every match of `pattern` starts with one (its literal beginnings, up to `k`
    characters, through alternations and optional parts), or None when some match may start with fewer than
    2 literal characters or there are too many. A text (lower-cased) holding none of them has no match."""
    try:
        from re import _constants as C
        from re import _parser as P
    except ImportError:  # Python 3.10
        try:
            import sre_constants as C  # noqa: N812
            import sre_parse as P  # noqa: N812
        except ImportError:
            return None

    class Unknown(Exception):
        pass

    def extend(cur: list[tuple[str, bool]], items) -> list[tuple[str, bool]]:
        """cur: (prefix, still open) pairs; the pairs after the items."""
        for op, av in items:
            if not any(o for _, o in cur):
                return cur
            if op in (C.AT, C.ASSERT, C.ASSERT_NOT):
                continue
            if op is C.LITERAL:
                cur = [(p + chr(av).lower(), len(p) + 1 < k) if o else (p, o) for p, o in cur]
            elif op is C.IN and len(av) <= 4 and all(iop is C.LITERAL for iop, _ in av):
                cur = [(p + chr(c).lower(), len(p) + 1 < k) for p, o in cur if o for _, c in av] + [x for x in cur if not x[1]]
            elif op is C.BRANCH:
                out = []
                for branch in av[1]:
                    out += extend(cur, branch)
                cur = out
            elif op is C.SUBPATTERN:
                cur = extend(cur, av[-1])
            elif op in (C.MAX_REPEAT, C.MIN_REPEAT):
                lo, hi, sub = av
                went = extend(cur, sub)
                if hi != 1:
                    went = [(p, False) for p, _ in went]
                cur = (cur + went) if lo == 0 else went
            else:
                cur = [(p, False) for p, _ in cur]
            cur = list(dict.fromkeys(cur))
            if len(cur) > cap:
                raise Unknown
        return cur

    try:
        got = extend([("", True)], P.parse(pattern.pattern, pattern.flags))
    except Exception:
        return None
    strings = {p for p, _ in got}
    if not strings or min(len(p) for p in strings) < 2:
        return None
    # a string holding a shorter one adds nothing
    return sorted(p for p in strings if not any(q != p and q in p for q in strings))


def _first_chars(pattern: re.Pattern) -> str | None:
    """The characters a match of `pattern` can start with, as a character-class body, or None when that is
    not a short list (or the stdlib's parser is not where it was). Python's `re` scans every position with
    every branch of a keyword alternation; a look-ahead on the first character lets it skip most of them."""
    try:
        from re import _constants as C
        from re import _parser as P
    except ImportError:  # Python 3.10
        try:
            import sre_constants as C  # noqa: N812
            import sre_parse as P  # noqa: N812
        except ImportError:
            return None

    def seq_first(items) -> tuple[set[int], bool] | None:
        """(first characters, whether the sequence can match empty), or None when unknown."""
        out: set[int] = set()
        for op, av in items:
            if op in (C.AT, C.ASSERT, C.ASSERT_NOT):
                continue  # zero-width: look at the next item
            got = item_first(op, av)
            if got is None:
                return None
            out |= got[0]
            if not got[1]:
                return out, False
        return out, True

    def item_first(op, av) -> tuple[set[int], bool] | None:
        if op is C.LITERAL:
            return {av}, False
        if op is C.IN:
            out: set[int] = set()
            for iop, iav in av:
                if iop is C.LITERAL:
                    out.add(iav)
                elif iop is C.RANGE and iav[1] - iav[0] < 64:
                    out.update(range(iav[0], iav[1] + 1))
                elif iop is C.CATEGORY and iav is C.CATEGORY_DIGIT and pattern.flags & re.ASCII:
                    out.update(range(48, 58))
                elif iop is C.CATEGORY and iav is C.CATEGORY_SPACE and pattern.flags & re.ASCII:
                    out.update(map(ord, " \t\n\r\f\v"))
                else:
                    return None
            return out, False
        if op is C.BRANCH:
            out, nullable = set(), False
            for branch in av[1]:
                got = seq_first(branch)
                if got is None:
                    return None
                out |= got[0]
                nullable |= got[1]
            return out, nullable
        if op is C.SUBPATTERN:
            return seq_first(av[-1])
        if op in (C.MAX_REPEAT, C.MIN_REPEAT):
            got = seq_first(av[2])
            return None if got is None else (got[0], got[1] or av[0] == 0)
        return None

    try:
        got = seq_first(P.parse(pattern.pattern, pattern.flags))
    except Exception:  # the private parser changed: scan without the hint
        return None
    if got is None or got[1] or not got[0] or len(got[0]) > 80:
        return None  # unknown, can match empty, or too many first characters to help
    first = got[0]
    chars = {chr(c) for c in first}
    if pattern.flags & re.IGNORECASE or "(?i" in pattern.pattern:  # a scoped (?i:...) counts too
        chars |= {c.swapcase() for c in chars}
    return "".join(re.escape(c) for c in sorted(chars))


def _starts_consuming(pattern: re.Pattern) -> bool:
    """Whether the pattern's first item is a literal or a character class (case-sensitive): then re's own scan
    skips the positions where it cannot start, which a look-ahead hint would only slow down."""
    if pattern.flags & re.IGNORECASE:
        return False
    try:
        from re import _constants as C
        from re import _parser as P
    except ImportError:  # Python 3.10
        try:
            import sre_constants as C  # noqa: N812
            import sre_parse as P  # noqa: N812
        except ImportError:
            return False
    try:
        items = P.parse(pattern.pattern, pattern.flags)
        while len(items) and items[0][0] is C.SUBPATTERN:
            items = items[0][1][-1]
        if len(items) and items[0][0] is C.BRANCH:  # every branch starts with a literal: re scans for those
            return all(len(b) and b[0][0] is C.LITERAL for b in items[0][1][1])
        return len(items) > 0 and items[0][0] in (C.LITERAL, C.IN)
    except Exception:
        return False


def _with_first_chars(pattern: re.Pattern) -> re.Pattern:
    if _starts_consuming(pattern):
        return pattern  # starts by consuming a character: re scans for it by itself, faster than a look-ahead
    first = _first_chars(pattern)
    return re.compile(f"(?=[{first}])(?:{pattern.pattern})", pattern.flags) if first else pattern


def _gate(pattern: re.Pattern) -> re.Pattern | None:
    """A scan of the lower-cased text for the pattern's literal beginnings (a trie), or None: when it finds
    none the pattern cannot match, and a scan for literals is far cheaper than the rule's own."""
    pre = _literal_prefixes(pattern)
    return re.compile(_trie(pre)) if pre else None


_RULES = [(typ, _with_first_chars(p), v, needs if needs is None or needs.__class__ is tuple else _with_first_chars(needs),
           _gate(p)) for typ, p, v, needs in _RULES]
_PHONE_PATTERN = _RULES[-1][1]
_ANY_DIGIT = re.compile(r"\d")
_DATE_RE = re.compile(_DATE, _FI)
_DOTTED_QUAD = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_SSN_LAYOUT = re.compile(r"\d{3}-\d{2}-\d{4}")
_EXTENSION = re.compile(r"\s*(?:(?:ext\.?|extension|转|轉|分机)\s*|x)\d{1,5}(?!\d)", _FI)  # "ext. 12", "x12", "转801"


_TEMPERATURE = re.compile(r"(?:\btemp(?:erature)?|\bT(?:max)?|fever|febrile|pyrexia|°)\W{0,3}$", re.IGNORECASE)


def _age_either(m: re.Match, text: str) -> tuple[int, int] | None:
    groups = m.groupdict()
    g = "v" if groups.get("v") is not None else "v2" if groups.get("v2") is not None else "v3"
    if g == "v3" and _TEMPERATURE.search(text, max(0, m.start() - 14), m.start()):
        return None
    return m.span(g) if 90 <= int(m.group(g)) <= 125 else None


_AGE_AFTER_NAME = re.compile(r"[ \t]*[,(][ \t]*(\d{2,3})(?=[ \t]*(?:[,;)]|\.(?!\d)|$|[ \t]+(?:yrs?|y|M|F)\b))")
_NAME_RULES: list[tuple[re.Pattern, Validator, tuple[str, ...] | None]] = []
_HAN_TEXT = ("<han>",)  # needs: a rule for Chinese text runs only when the text holds a Chinese character
_HAN_RE = re.compile(r"[\u4e00-\u9fff]")


def _name_rules() -> list[tuple[re.Pattern, Validator, tuple[str, ...] | None]]:
    """The NAME rules, compiled on first use (the Chinese surname list comes from Faker), with the strings
    of which the text must hold one for the rule to run (or None)."""
    if not _NAME_RULES:
        sur = _zh_surname_alt()
        _NAME_RULES.extend((_with_first_chars(r[0]), r[1], r[2] if len(r) > 2 else None) for r in [
            # after a cue: a name, or an all-capital surname ("Patient: ZHOU Mingyuan", "Surname NGUYEN")
            (re.compile(_EN_CUE + rf"(?:(?P<v>{_NAME_SEQ})|(?P<caps>(?-i:[A-Z]{{2,}}(?:[-'’][A-Z]{{2,}})?"
                        r"(?: (?:[A-Z][a-z]+(?:-[A-Za-z][a-z]+)?|[A-Z]{2,}(?:-[A-Z]{2,})?)){0,3}))(?![A-Za-z]))", _FI), _en_cue_name),
            (re.compile(r"(?P<f>[A-Z](?<![A-Za-z][A-Z])[a-z]{2,})(?=(?:[ \t]+[A-Z]\.)?(?:[ \t](?P<mid>[A-Z][a-z]+))?[ \t]+"
                        r"(?P<l>[A-Z](?:[a-z]+|['’][A-Z][a-z]+)(?:[A-Z][a-z]+)?(?:-[A-Z][a-z]+)?)(?![A-Za-z]))", _F), _listed_name),
            # capitalised words before a credential ("T. Alvarez, PharmD") or a demographic / record field
            # ("Nguyen Van Minh, 62,", "Fatima Al-Zahrani, 90 y/o", "Wei Zhang, PHN ...")
            (re.compile(_NAME_AFTER, _F), _name_before_field),
            # LAST, First (records, radiology headers): "HOLLOWAY, Jessica", "SANCHEZ, MIGUEL A", "WONG, Siu-ming"
            (re.compile(r"(?P<v>[A-Z](?<![A-Za-z][A-Z])[A-Z]{2,}(?:[-'’][A-Z]{2,})?,[ \t]*(?:[A-Z][a-z]+(?:-[A-Za-z][a-z]+)?|[A-Z]{2,})"
                        r"(?:[ \t]+(?:[A-Z][a-z]+|[A-Z]{2,}|[A-Z]\.?)(?![A-Za-z]))?)", _F), _caps_surname),
            # Last, First at a line start before a field separator: "Wapachee, Lorraine | adm ..."
            (re.compile(r"^[ \t]*(?P<v>[A-Z][a-z]+(?:[-'’][A-Z][a-z]+)?,[ \t]*[A-Z][a-z]+(?:[ \t]+[A-Z]\.?)?)"
                        r"(?=[ \t]*(?:\||\t|[ \t]{2,}\S))", _F | re.MULTILINE), _last_first, ("|", "\t", "  ")),
            # an English cue before a Chinese name: "Patient: 黃嘉欣"
            (re.compile(rf"(?i:\b(?:patient(?:'s)?\s+name|patient|name)[ \t]*[:：][ \t]*)(?P<s>{sur})(?=(?P<g>[{_HAN_C}]{{1,3}})?)(?P<t>)",
                        _F), _zh_name, _HAN_TEXT),
            # Hong Kong romanisation in brackets after a Chinese name: "陳大文（CHAN Tai Man）"
            (re.compile(rf"(?<=[{_HAN_C}][（(])(?P<v>[A-Z]{{2,}},?[ \t]+[A-Z][a-z]+(?:[- ][A-Za-z][a-z]+){{0,2}})(?=[)）])", _F),
             _value, _HAN_TEXT),
            # a Latin name after a Chinese cue ("患者：Liu Jianjun", "谈话医生：Zhang Wei")
            (re.compile(rf"(?:{_ZH_CUE}|{_ZH_ROLE_CUE})(?P<v>[A-Z][a-z]+(?:[ \t]+[A-Z][a-z]+){{1,2}})(?![A-Za-z])", _F), _value, _HAN_TEXT),
            (re.compile(rf"(?:{_ZH_CUE}|{_ZH_ROLE_CUE})(?P<s>{sur})(?=(?P<g>[{_HAN_C}]{{1,3}})?)(?P<t>)", _F), _zh_name, _HAN_TEXT),
            # a name before its sex: "黃美玲，女，97歲", "劉建宏，男"
            (re.compile(rf"(?P<s>{sur})(?P<g>[{_HAN_C}]{{1,3}})(?P<t>)(?=[)）]?[，,、]\s*(?:男|女)性?(?:[，,、。；;\s]|$))", _F), _zh_name, ("男", "女")),
            # a Chinese name in brackets after a Latin one: "Liu Jianjun（刘建军）"
            (re.compile(rf"(?<=[A-Za-z][（(])(?P<s>{sur})(?P<g>[{_HAN_C}]{{1,2}})(?P<t>)(?=[)）])", _F), _zh_name, ("(", "（")),
            # transliterated names with a middle dot: "阿依古丽·买买提"
            (re.compile(rf"(?:{_ZH_CUE}|{_ZH_ROLE_CUE}|(?<![{_HAN_C}])(?=[{_HAN_C}]{{2,4}}[·•]))"
                        rf"(?P<v>[{_HAN_C}]{{2,4}}[·•][{_HAN_C}]{{2,5}})", _F), _value, ("·", "•")),
            (re.compile(rf"(?P<pre>[{_HAN_C}]{{1,3}})(?={_ZH_TITLES})", _F), _zh_titled_name, _HAN_TEXT),
        ])
    return _NAME_RULES


_ALL_TYPES = frozenset(PHI_TYPES)
_STRONGER_THAN_PHONE = frozenset(t for t in PHI_TYPES if _PRIORITY[t] < _PRIORITY["PHONE"])


def _check_types(types: Iterable[str] | None) -> frozenset[str]:
    if types is None:
        return _ALL_TYPES
    if isinstance(types, str):
        types = [t for t in types.split(",") if t.strip()]
    wanted = frozenset(_ALIASES.get(t.strip().upper(), t.strip().upper()) for t in types)
    unknown = sorted(wanted - set(PHI_TYPES))
    if unknown:
        raise MedtuneError(f"unknown PHI type(s): {', '.join(unknown)}",
                           hint=f"valid types: {', '.join(PHI_TYPES)}")
    return wanted


def _resolve(candidates: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Longest first, then type priority, then leftmost; keep each span that overlaps none kept so far."""
    candidates.sort(key=lambda c: (c[0] - c[1], _PRIORITY[c[2]], c[0]))
    kept: list[tuple[int, int, str]] = []  # sorted by start, pairwise disjoint
    for s, e, t in candidates:
        i = bisect.bisect_left(kept, (s,))
        if (i == len(kept) or kept[i][0] >= e) and (i == 0 or kept[i - 1][1] <= s):
            kept.insert(i, (s, e, t))
    return kept


_LATIN_IN_BRACKETS = re.compile(rf"[（(][ \t]*(?P<v>{_NAME_SEQ}|[A-Z]{{2,}}(?: [A-Z][a-z]+(?:-[A-Za-z][a-z]+)?){{1,3}})[ \t]*[)）]", _F)


def _name_candidates(text: str, taken: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """NAME spans: cue and list rules, then every other occurrence of a found name (and of an English
    surname of 3+ letters) in the text."""
    found = []
    has_han = _HAN_RE.search(text) is not None
    for pattern, validate, needs in _name_rules():
        if needs is _HAN_TEXT:
            if not has_han:
                continue
        elif needs is not None and not any(n in text for n in needs):
            continue
        for m in pattern.finditer(text):
            span = validate(m, text)
            if span is not None and span[1] > span[0]:
                found.append((span[0], span[1], "NAME"))
    if has_han:  # the Latin form in brackets after a Chinese name found: "阮氏蘭（Nguyễn Thị Lan）"
        for s, e, _ in list(found):
            if e < len(text) and text[e] in "（(" and "\u4e00" <= text[e - 1] <= "\u9fff":
                if (b := _LATIN_IN_BRACKETS.match(text, e)) is not None:
                    found.append((b.start("v"), b.end("v"), "NAME"))
    names = {text[s:e] for s, e, _ in found}
    tokens = {w for n in names for w in n.split() if len(w) >= 3 and w[0].isupper() and w not in _NOT_NAMES}
    for name in names | tokens:  # str.find, not a regex per name: compiling them would churn re's cache
        if not name.strip():
            continue
        ascii_name = name.isascii()
        at = text.find(name)
        while at >= 0:
            end = at + len(name)
            if not ascii_name or ((at == 0 or not (text[at - 1].isalpha() or text[at - 1] in "-'’"))
                                  and (end == len(text) or not (text[end].isalpha() or text[end:end + 2][-1:].isalpha()
                                                                and text[end] in "-'’"))):
                found.append((at, end, "NAME"))
            at = text.find(name, end)
    return found


_FULLWIDTH_DIGIT = re.compile("[\uff10-\uff19]")
_FULLWIDTH_TABLE = {0xFF10 + i: 0x30 + i for i in range(10)}  # "１３８" -> "138", one character each: offsets stay

# HL7 v2 segments: (segment, field number) -> type; a name field's components up to the prefix (family^given^
# middle^suffix^prefix), an XCN field's id (a clinician's licence or NPI) and name, each repetition (~) apart
_HL7_FIELDS = {("PID", 2): "MRN", ("PID", 3): "MRN", ("PID", 4): "MRN", ("PID", 5): "NAME", ("PID", 6): "NAME",
               ("PID", 7): "DATE", ("PID", 18): "ACCOUNT", ("PID", 19): "ID", ("PID", 29): "DATE",
               ("NK1", 2): "NAME", ("PV1", 7): "XCN", ("PV1", 8): "XCN", ("PV1", 9): "XCN", ("PV1", 17): "XCN"}
_HL7_SEGMENT = re.compile(r"(?m)^(PID|NK1|PV1)\|[^\n]*")


def _hl7_candidates(text: str) -> list[tuple[int, int, str]]:
    out = []
    for seg in _HL7_SEGMENT.finditer(text):
        name, pos = seg.group(1), seg.start()
        for i, field in enumerate(seg.group().split("|")):
            typ = _HL7_FIELDS.get((name, i))
            if typ and field.strip("^~ "):
                rpos = pos
                for rep in field.split("~"):
                    comps = rep.split("^")
                    if typ == "NAME":
                        parts = comps[:5]
                    elif typ == "XCN":
                        if any(c.isdigit() for c in comps[0]):
                            out.append((rpos, rpos + len(comps[0]), "LICENSE"))
                        parts, rpos2 = comps[1:6], rpos + len(comps[0]) + 1
                        while parts and not parts[-1]:
                            parts.pop()
                        if parts and any(p.strip() for p in parts):
                            out.append((rpos2, rpos2 + len("^".join(parts)), "NAME"))
                        rpos += len(rep) + 1
                        continue
                    else:
                        parts = comps[:1]
                    while parts and not parts[-1]:
                        parts.pop()
                    value = "^".join(parts)
                    if value.strip() and (typ == "NAME" or any(c.isdigit() for c in value)):
                        out.append((rpos, rpos + len(value), typ))
                    rpos += len(rep) + 1
            pos += len(field) + 1
    return out


# a CSV header of field names, then its rows: a column named for an identifier holds one in each row
_CSV_HEADER = re.compile(r"(?m)^[ \t]*[A-Za-z][A-Za-z_ ./]*(?:,[ \t]*[A-Za-z][A-Za-z_ ./]*){2,}[ \t]*$")
_CSV_COLUMNS = (
    (re.compile(r"(?:mrn|urn?|hn|uhid|patient_?id|pt_?id|record(?:_?(?:no|number))?|chart(?:_?(?:no|number))?|"
                r"hosp(?:ital)?_?(?:no|number|id))"), "MRN"),
    (re.compile(r"(?:(?:patient_?|pt_?)?(?:name|last|first|surname|forename|given|middle)(?:_?name)?|family_?name|"
                r"last_?name|first_?name|given_?names?|patient|pt)"), "NAME"),
    (re.compile(r"(?:dob|d_?o_?b|birth(?:_?date)?|date_?of_?birth|birthdate|adm(?:it|ission)?(?:_?(?:dt|date))?|"
                r"disch(?:arge)?(?:_?(?:dt|date))?|dc_?(?:dt|date)|dod|death(?:_?date)?|date_?of_?death)"), "DATE"),
    (re.compile(r"(?:ssn|nhs(?:_?(?:no|number))?|national_?id)"), "ID"),
    (re.compile(r"(?:phone|tel|telephone|mobile|cell|fax)(?:_?(?:no|number))?"), "PHONE"),
)


def _csv_candidates(text: str) -> list[tuple[int, int, str]]:
    out = []
    for head in _CSV_HEADER.finditer(text):
        cols = []
        for c in head.group().split(","):
            key = re.sub(r"[ ./]+", "_", c.strip().lower())
            cols.append(next((t for pat, t in _CSV_COLUMNS if pat.fullmatch(key)), None))
        keys = [re.sub(r"[ ./]+", "_", c.strip().lower()) for c in head.group().split(",")]
        if not any(cols) or all(t in (None, "NAME") for t in cols) and all(k == "name" for k, t in zip(keys, cols) if t):
            continue  # "name,dose,route": a bare name column with no other identifier may name anything
        pos = head.end() + 1
        while pos < len(text):
            end = text.find("\n", pos)
            end = len(text) if end < 0 else end
            fields = text[pos:end].split(",")
            if len(fields) != len(cols):
                break
            fpos = pos
            for f, typ in zip(fields, cols):
                v = f.strip()
                if typ and v:
                    s = fpos + f.index(v)
                    ok = (any(c.isalpha() for c in v) if typ == "NAME" else
                          _date_ok(v) and _DATE_RE.fullmatch(v) is not None if typ == "DATE" else
                          sum(c.isdigit() for c in v) >= 3)
                    if ok:
                        out.append((s, s + len(v), typ))
                fpos += len(f) + 1
            pos = end + 1
    return out


def find_phi(text: str, types: Iterable[str] | None = None) -> list[Span]:
    """The PHI spans in `text`, non-overlapping and sorted by start. `types` (names from PHI_TYPES, or
    None for all) filters the result; spans are resolved over all types first (see the module doc)."""
    wanted = _check_types(types)
    if not text:
        return []
    orig = text
    if not text.isascii() and _FULLWIDTH_DIGIT.search(text):
        text = text.translate(_FULLWIDTH_TABLE)
    has_digit = _ANY_DIGIT.search(text) is not None
    lower = text.lower()
    candidates: list[tuple[int, int, str]] = []
    for typ, pattern, validate, needs, gate in _RULES:
        if gate is not None and gate.search(lower) is None:
            continue
        if needs is not None:  # strings of which the text must hold one, or a cheaper pattern that must match
            if needs.__class__ is tuple:
                if not any(n in lower for n in needs):
                    continue
            elif needs.search(text) is None:
                continue
        if not has_digit and typ not in ("EMAIL", "URL", "VEHICLE", "DATE") and needs is not _NO_DIGIT_NEEDED:
            continue  # every other rule needs a digit
        is_phone = pattern is _PHONE_PATTERN
        for m in pattern.finditer(text):
            if is_phone:
                ms, me = m.span()
                if any(s <= ms and me <= e and t in _STRONGER_THAN_PHONE for s, e, t in candidates):
                    continue  # libphonenumber is the slow part; this span is already taken by a stronger type
            span = validate(m, text)
            if span is not None and span[1] > span[0]:
                if typ == "PHONE" and (ext := _EXTENSION.match(text, span[1])):
                    span = (span[0], ext.end())
                candidates.append((span[0], span[1], typ))
    if "|" in text and ("PID|" in text or "PV1|" in text or "NK1|" in text):
        candidates += _hl7_candidates(text)
    if "," in text and "\n" in text:
        candidates += _csv_candidates(text)
    names = _name_candidates(text, [])
    if has_digit:  # a bare age right after a name: "Gordon MacIsaac, 93, lives ..."
        for _, e, _ in names:
            if (a := _AGE_AFTER_NAME.match(text, e)) and 90 <= int(a.group(1)) <= 125:
                candidates.append((a.start(1), a.end(1), "AGE"))
    kept = _resolve(candidates + names)
    return [Span(s, e, t, orig[s:e]) for s, e, t in kept if t in wanted]


# --------------------------------------------------------------------------- replacing

DEID_MODES = ("mask", "surrogate")
_YEAR = re.compile(r"(?:1[89]|20)\d\d")
_ZH_YEAR = re.compile(r"[〇零一二三四五六七八九]{4}")


def _year_of(s: str) -> str | None:
    """The four-digit year written in a date, if any (Chinese numerals read as digits)."""
    if m := _YEAR.search(s):
        return m.group()
    if m := _ZH_YEAR.search(s):
        return "".join(str("〇一二三四五六七八九".index(c)) if c != "零" else "0" for c in m.group())
    if m := re.search(r"民[國国]\s*(\d{1,3})", s):
        return str(1911 + int(m.group(1)))
    return None


def deidentify(text: str, types: Iterable[str] | None = None, *, mode: str = "mask", keep_year: bool = False,
               seed: int = 0) -> tuple[str, collections.Counter]:
    """`text` with each PHI span replaced, and a Counter of the spans replaced per type.

    mode "mask" writes "[TYPE]"; "surrogate" writes a consistent fake value (see :class:`Surrogates`).
    keep_year: a DATE keeps its year ("[DATE 1984]" when masking; the shifted date keeps its year).
    seed: with the text, seeds the surrogates, so a document always gets the same ones.
    """
    return replace_spans(text, find_phi(text, types), mode=mode, keep_year=keep_year, seed=seed)


def replace_spans(text: str, spans: list[Span], *, mode: str = "mask", keep_year: bool = False,
                  seed: int = 0) -> tuple[str, collections.Counter]:
    """`text` with `spans` (sorted, disjoint, as find_phi returns them) replaced as :func:`deidentify` does."""
    if mode not in DEID_MODES:
        raise MedtuneError(f"unknown de-identification mode {mode!r}", hint="use mask or surrogate")
    fake = Surrogates(text, seed, keep_year) if mode == "surrogate" and spans else None
    out, pos = [], 0
    for sp in spans:
        out.append(text[pos:sp.start])
        if fake is not None:
            out.append(fake.value(sp))
        elif keep_year and sp.type == "DATE" and (year := _year_of(sp.text)):
            out.append(f"[DATE {year}]")
        else:
            out.append(f"[{sp.type}]")
        pos = sp.end
    out.append(text[pos:])
    return "".join(out), collections.Counter(sp.type for sp in spans)


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


class Surrogates:
    """Consistent fake values for one document.

    The same identifier gets the same surrogate everywhere in the document; a name's words are mapped one
    by one, so "Harold Whitaker" and "Mr. Whitaker" keep sharing a surname. Dates move by one offset per
    document (1-365 days, either way), written in the original's format where it is a numeric, ISO,
    month-name or Chinese 年月日 date (others become an ISO date). Ages over 89 become "90+" (Safe Harbor's
    "90 or older"). Names, e-mails, URLs, IPs and addresses come from Faker (en_US, or zh_CN for Chinese
    text); other identifiers keep their layout with each letter and digit replaced.
    """

    def __init__(self, text: str, seed: int = 0, keep_year: bool = False):
        import hashlib
        import random

        from faker import Faker

        digest = int.from_bytes(hashlib.blake2b(f"{seed}\0{text}".encode("utf-8"), digest_size=8).digest(), "big")
        self.rng = random.Random(digest)
        self.keep_year = keep_year
        self.shift = _dt.timedelta(days=self.rng.choice([-1, 1]) * self.rng.randint(1, 365))
        self.fakers: dict[str, Faker] = {}
        self.seed = digest
        self.memo: dict[tuple[str, str], str] = {}

    def faker(self, zh: bool):
        from faker import Faker

        loc = "zh_CN" if zh else "en_US"
        if loc not in self.fakers:
            self.fakers[loc] = Faker(loc)
            self.fakers[loc].seed_instance(self.seed)
        return self.fakers[loc]

    def value(self, sp: Span) -> str:
        key = (sp.type, sp.text)
        if key not in self.memo:
            self.memo[key] = self._make(sp)
        return self.memo[key]

    def _make(self, sp: Span) -> str:
        s, zh = sp.text, bool(re.search(f"[{_HAN}]", sp.text))
        if sp.type == "NAME":
            return self._name(s, zh)
        if sp.type == "DATE":
            return self._date(s)
        if sp.type == "AGE":
            return "90+"
        f = self.faker(zh)
        if sp.type == "EMAIL":
            return f.email()
        if sp.type == "URL":
            return f.url()
        if sp.type == "IP":
            return f.ipv6() if ":" in s else f.ipv4_public()
        if sp.type == "ADDRESS":
            return f.address().replace("\n", ", ") if len(s) > 8 else f.postcode()
        return self._shape(s)

    def _shape(self, s: str) -> str:
        """Same layout, each digit and Latin letter replaced (other characters kept)."""
        r = self.rng
        return "".join(str(r.randint(0, 9)) if c.isdigit() and c.isascii() else
                       r.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") if c.isupper() and c.isascii() else
                       r.choice("abcdefghjkmnpqrstuvwxyz") if c.islower() and c.isascii() else c for c in s)

    def _name(self, s: str, zh: bool) -> str:
        f = self.faker(zh)
        if zh:
            key = ("NAME-zh", s[0])
            if key not in self.memo:
                self.memo[key] = f.last_name()[0]
            given = "".join(f.first_name()[0] for _ in s[1:])
            return self.memo[key] + given
        words = s.split()
        out = []
        for i, w in enumerate(words):
            if len(w.rstrip(".")) <= 1 or w.rstrip(".") in ("Jr", "Sr", "II", "III", "IV"):
                out.append(w)
                continue
            key = ("NAME-word", w)
            if key not in self.memo:
                last = i == len(words) - 1
                self.memo[key] = f.last_name() if last else f.first_name()
            out.append(self.memo[key])
        return " ".join(out)

    def _date(self, s: str) -> str:
        parsed = _parse_date(s)
        if parsed is None:
            year = _year_of(s)
            return f"[DATE {year}]" if self.keep_year and year else "[DATE]"
        date, render = parsed
        new = date + self.shift
        if self.keep_year:
            try:
                new = new.replace(year=date.year)
            except ValueError:  # 29 February
                new = new.replace(year=date.year, day=28)
        return render(new)


def _parse_date(s: str):
    """(date, a function writing a date in the same format) for the common layouts, or None."""
    if m := re.fullmatch(r"((?:1[89]|20)\d\d)(\s*)([-/.年])(\s*)(\d{1,2})(\s*)([-/.月])(\s*)(\d{1,2})(\s*[日号]?)", s):
        y, mo, d = int(m.group(1)), int(m.group(5)), int(m.group(9))
        pad = len(m.group(5)) == 2
        g = m.groups()

        def render(x):
            mm, dd = (f"{x.month:02d}", f"{x.day:02d}") if pad else (str(x.month), str(x.day))
            return f"{x.year}{g[1]}{g[2]}{g[3]}{mm}{g[5]}{g[6]}{g[7]}{dd}{g[9]}"
    elif m := re.fullmatch(r"(\d{1,2})([-/.])(\d{1,2})\2((?:1[89]|20)\d\d|\d\d)", s):
        a, b, yy = int(m.group(1)), int(m.group(3)), m.group(4)
        y = int(yy) if len(yy) == 4 else int(yy) + (1900 if int(yy) >= 30 else 2000)
        day_first = a > 12
        d, mo = (a, b) if day_first else (b, a)
        pad = len(m.group(1)) == 2
        sep = m.group(2)

        def render(x):
            first, second = (x.day, x.month) if day_first else (x.month, x.day)
            f1, f2 = (f"{first:02d}", f"{second:02d}") if pad else (str(first), str(second))
            return f"{f1}{sep}{f2}{sep}{x.year if len(yy) == 4 else f'{x.year % 100:02d}'}"
    elif m := re.fullmatch(r"(\d{1,2})(?:st|nd|rd|th)?([ -])([A-Za-z]{3,9})\.?([ ,-]+)((?:1[89]|20)\d\d)", s):
        mon = _month(m.group(3))
        if mon is None:
            return None
        d, mo, y = int(m.group(1)), mon, int(m.group(5))
        short = len(m.group(3)) == 3

        def render(x):
            name = _MONTHS[x.month - 1][:3] if short else _MONTHS[x.month - 1]
            return f"{x.day}{m.group(2)}{name}{m.group(4)}{x.year}"
    elif m := re.fullmatch(r"([A-Za-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?(,?\s+)((?:1[89]|20)\d\d)", s):
        mon = _month(m.group(1))
        if mon is None:
            return None
        d, mo, y = int(m.group(2)), mon, int(m.group(4))
        short = len(m.group(1)) == 3

        def render(x):
            name = _MONTHS[x.month - 1][:3] if short else _MONTHS[x.month - 1]
            return f"{name} {x.day}{m.group(3)}{x.year}"
    else:
        return None
    try:
        return _dt.date(y, mo, d), render
    except ValueError:
        return None


def _month(word: str) -> int | None:
    w = word[:3].lower()
    for i, name in enumerate(_MONTHS):
        if name[:3].lower() == w:
            return i + 1
    return None
