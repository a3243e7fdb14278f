"""Redaction: planted personal data of every kind in patient-assistant texts is replaced, with
exact counts per kind; medical text that names no one is left as it was; a held-out group,
written after the patterns were tuned and never tuned on, is measured; names from record
fields, extra patterns, `kinds`, the NER model option and the offline start."""

import socket
import time

import pytest
import spacy

from raylign.config import RedactionConfig
from raylign.data import redaction
from raylign.data.redaction import Redactor, names_in


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor(RedactionConfig())


# (text, spans per kind, the planted values: none may survive). The patterns were tuned on these.
PLANTED = [
    ("Hi, I'm worried about my rash. You can email me at jane.doe@gmail.com or "
     "J_Smith+clinic@mail.example.co.uk, or call (617) 555-0123.",
     {"EMAIL": 2, "PHONE": 1}, ["jane.doe@gmail.com", "J_Smith+clinic@mail.example.co.uk", "555-0123"]),
    ("My GP is in London, ring me on +44 20 7946 0958 or my mobile 07700 900123. Home is "
     "221B Baker Street, London NW1 6XE.",
     {"PHONE": 2, "ADDRESS": 1}, ["7946 0958", "07700 900123", "221B Baker Street", "NW1 6XE"]),
    ("Can my insurer see this? My SSN is 536-22-1234, social security number 536 22 1234 on the old card, "
     "and my cell is 415.555.2671.",
     {"NATIONAL_ID": 2, "PHONE": 1}, ["536-22-1234", "536 22 1234", "415.555.2671"]),
    ("NHS number 943 476 5919, NHS no. 9434765919, National Insurance AB 12 34 56 C. "
     "Can I get my repeat prescription of sertraline 50mg?",
     {"NATIONAL_ID": 3}, ["943 476 5919", "9434765919", "AB 12 34 56 C"]),
    ("Please send the leaflet to 1600 Pennsylvania Ave NW, Washington, DC 20500 or to "
     "Flat 3, 12 Oak Lane, Apt 4, Springfield, IL 62704. i live at 12 oak lane apt 4 in boston. "
     "Also PO Box 1234.",
     {"ADDRESS": 4}, ["1600 Pennsylvania Ave", "20500", "12 Oak Lane", "62704", "12 oak lane", "Box 1234"]),
    ("Some records: 350 Fifth Avenue, New York, NY 10118. 10 Downing Street. 55 W. 34th St., Apt. 12B, "
     "New York, NY 10001. 1234 N Main St #5, 2 Chestnut Close, Reading RG1 2AB.",
     {"ADDRESS": 5}, ["350 Fifth Avenue", "10118", "10 Downing Street", "55 W. 34th", "12B", "10001",
                      "1234 N Main", "2 Chestnut Close", "RG1 2AB"]),
    ("I was born on March 14, 1985. DOB: 03/14/1985. Date of birth 14 March 1985, born 3/14/85. "
     "My birthday is July 4th and I was born in March 1985. Birthday: 1990-07-04",
     {"DATE_OF_BIRTH": 7}, ["March 14, 1985", "03/14/1985", "14 March 1985", "3/14/85", "July 4th", "March 1985",
                            "1990-07-04"]),
    ("D.O.B. 7/4/1990; my date of birth is the 4th of July, 1990; she was born Jan. 5, 2001, "
     "birthdate: Dec 25 1979, born on 04.07.1990",
     {"DATE_OF_BIRTH": 5}, ["7/4/1990", "4th of July, 1990", "Jan. 5, 2001", "Dec 25 1979", "04.07.1990"]),
    ("My appointment is on 2024-05-01, then 05/12/2024 and June 3rd, and 3 May 2024, and the 14th of March. "
     "The scan was Jan 5, 2024 and the blood test on 11-02-2023, Sept. 30, 2023.",
     {"DATE": 8}, ["2024-05-01", "05/12/2024", "June 3rd", "3 May 2024", "14th of March", "Jan 5, 2024",
                   "11-02-2023", "Sept. 30, 2023"]),
    ("MRN 00123456, medical record number: A1234567, patient ID 884422, chart # 55-1234, MRN#00987654, "
     "Med rec no. 55012345, hospital number RX12345.",
     {"MEDICAL_RECORD": 7}, ["00123456", "A1234567", "884422", "55-1234", "00987654", "55012345", "RX12345"]),
    ("The portal at https://portal.example-hospital.org/patients/88231/labs shows my results, "
     "also www.mychart.org/visit?id=3342 and http://10.0.0.5/records/123. My home server is 192.168.1.10 "
     "and 2001:db8::8a2e:370:7334.",
     {"URL": 3, "IP_ADDRESS": 2}, ["patients/88231", "visit?id=3342", "records/123", "192.168.1.10",
                                   "2001:db8::8a2e:370:7334"]),
]

# Medical text that names no one: left exactly as it is.
UNCHANGED = [
    "Take 500 mg every 6 hours, and call 911 if it gets worse. I was diagnosed in 2019.",
    "Read cdc.gov or https://www.nhs.uk/ for information. Ibuprofen 200mg, blood pressure 120/80.",
    "HbA1c 7.2%, LDL 130 mg/dL, Type 2 diabetes, take it at 3pm or 10:30 am; 2 may help, march 3 miles.",
    "Take 1-2 tablets 3 times a day for 5-7 days. Glucose 5.5 mmol/L. eGFR 60-89.",
    "I called 1-800-273-8255 and 988. Those 2 may interact. Dose 0.5-1 mg/kg. 12/2019 was when it started.",
    "I take metformin 500 mg twice daily and lisinopril 10 mg. My A1C was 6.8 in January.",
    "BMI 31.2, heart rate 110 bpm, temperature 101.3 F, SpO2 94%, INR 2.5, potassium 3.2 mEq/L.",
    "1 in 4 people, open 24/7, ICD-10 E11.9, CPT 99213. Text HOME to 741741. My kid is 3 and weighs 15 kg.",
    "Room 12 at St. Mary's Hospital. Pain level 7/10, 2/3 of patients, 1/2 tablet, 20/20 vision, Norco 5/325.",
    "May I ask something? Can I take it in May 2024? I'm 5 feet 4 and weigh 180 lbs. Ratio 1:1, 12:30:45.",
    "mg/kg, ml/hr, N/A, and/or, U.S./Canada, b.i.d./t.i.d. The chart 2024 shows improvement. Patient number 3.",
    "I walked 2 miles down the road. The 5th Avenue clinic. Route 66. Version 1.2.23. Vitamin D 50,000 IU.",
    "He was born prematurely at 32 weeks. My due date is in April. Born in 1985. Covid booster 2023-2024.",
    "Platelets 150-400 x10^9/L, WBC 4.5-11.0, TSH 0.4-4.0 mIU/L. Tylenol 325 mg every 4-6 hours.",
]


@pytest.mark.parametrize("text,counts,values", PLANTED, ids=[f"planted{i}" for i in range(len(PLANTED))])
def test_planted_values_are_replaced_with_exact_counts(redactor, text, counts, values):
    out = redactor.redact(text)
    assert out.counts == counts, out.text
    for value in values:
        assert value.lower() not in out.text.lower(), (value, out.text)
    for kind, n in counts.items():
        assert out.text.count(f"[{kind}]") == n


@pytest.mark.parametrize("text", UNCHANGED, ids=[f"unchanged{i}" for i in range(len(UNCHANGED))])
def test_medical_text_that_names_no_one_is_unchanged(redactor, text):
    assert redactor.redact(text) == (text, {})


def test_keywords_stay_and_text_around_is_kept(redactor):
    out = redactor.redact("I was born on March 14, 1985 and my MRN is 00123456. See https://x.example.org/a/1.")
    assert out.text == "I was born on [DATE_OF_BIRTH] and my MRN is [MEDICAL_RECORD]. See [URL]."


# Written after the patterns above were tuned, and never tuned on: (text, spans per kind, the
# planted values). What the redactor does on them is measured, then held as a floor.
HELD_OUT = [
    ("Hello, this is for my mum. Her date of birth is 02/11/1948 and her NHS number is 401 023 2137. "
     "She lives at 7 Rosemary Gardens, Leeds LS6 2QT.",
     {"DATE_OF_BIRTH": 1, "NATIONAL_ID": 1, "ADDRESS": 1}, ["02/11/1948", "401 023 2137", "7 Rosemary Gardens",
                                                           "LS6 2QT"]),
    ("can u send my results to mike.r.hansen@outlook.com? my number is 312-555-0186 if thats easier",
     {"EMAIL": 1, "PHONE": 1}, ["mike.r.hansen@outlook.com", "312-555-0186"]),
    ("I had my colonoscopy on Feb 9, 2024 at 4400 Wisconsin Ave NW. My MRN: 3300457812.",
     {"DATE": 1, "ADDRESS": 1, "MEDICAL_RECORD": 1}, ["Feb 9, 2024", "4400 Wisconsin Ave", "3300457812"]),
    ("The nurse told me to log in at https://myhealth.northwell.edu/app/results?patient=55123 but it fails "
     "from my IP 73.162.44.201.",
     {"URL": 1, "IP_ADDRESS": 1}, ["results?patient=55123", "73.162.44.201"]),
    ("Born 12 June 1971, SSN 219-09-9999. Do I qualify for the shingles vaccine?",
     {"DATE_OF_BIRTH": 1, "NATIONAL_ID": 1}, ["12 June 1971", "219-09-9999"]),
    ("Patient ID: PT-448812. My next infusion is scheduled for 9/23/2024. Call me at +1 (646) 555-0175.",
     {"MEDICAL_RECORD": 1, "DATE": 1, "PHONE": 1}, ["PT-448812", "9/23/2024", "646) 555-0175"]),
    ("my son's bday is 5/17/2016 and he weighs 48 lbs, how much children's motrin can he have?",
     {"DATE_OF_BIRTH": 1}, ["5/17/2016"]),
    ("We moved to 88 Harbour View Road, Apt 2B, Halifax. Our new landline is (902) 555-0148.",
     {"ADDRESS": 1, "PHONE": 1}, ["88 Harbour View Road", "Apt 2B", "555-0148"]),
    ("Please fax the referral to my doctor, email drpatel@riversidefamilymed.com, and reference chart number "
     "7731009.",
     {"EMAIL": 1, "MEDICAL_RECORD": 1}, ["drpatel@riversidefamilymed.com", "7731009"]),
    ("My national insurance number is JG 10 37 52 A and I started the new job on 1st September 2023.",
     {"NATIONAL_ID": 1, "DATE": 1}, ["JG 10 37 52 A", "1st September 2023"]),
    ("I'm staying at 1420 Lakeshore Dr., Chicago, IL 60610 until the 20th of October.",
     {"ADDRESS": 1, "DATE": 1}, ["1420 Lakeshore Dr", "60610", "20th of October"]),
    ("The clinic emailed me a link: portal.mercyhealth.org/messages/inbox/77120 - is it safe to open?",
     {"URL": 1}, ["messages/inbox/77120"]),
    # Harder ones, written to find the limits.
    ("my phone # is 6175550123, text me", {"PHONE": 1}, ["6175550123"]),
    ("DOB is Jan 3rd '82 if you need it", {"DATE_OF_BIRTH": 1}, ["Jan 3rd '82"]),
    ("i was born 1/3/82 and have asthma", {"DATE_OF_BIRTH": 1}, ["1/3/82"]),
    ("i live on 45 elm st, can i get a home visit", {"ADDRESS": 1}, ["45 elm st"]),
    ("address: 9 Chapel Row, Bath BA1 1HP", {"ADDRESS": 1}, ["9 Chapel Row", "BA1 1HP"]),
    ("My email: sarah_k92 at yahoo dot com", {"EMAIL": 1}, ["sarah_k92 at yahoo"]),
    ("my MRN is 1234-5678-90 at the Cleveland clinic", {"MEDICAL_RECORD": 1}, ["1234-5678-90"]),
    ("My Medicare number is 2123 45670 1.", {"NATIONAL_ID": 1}, ["2123 45670 1"]),
    ("the results from 14-Mar-2024 look off", {"DATE": 1}, ["14-Mar-2024"]),
    ("appointment March 14th 2024 at 2pm, then 2024/03/14 and 14/03/2024 10:30", {"DATE": 3},
     ["March 14th 2024", "2024/03/14", "14/03/2024"]),
    ("Call me on 0161 496 0000 after six.", {"PHONE": 1}, ["0161 496 0000"]),
    ("my results are at http://localhost:8080/patient/123", {"URL": 1}, ["patient/123"]),
    ("I'm Dr. Okafor's patient; my chart no. is 00-44-2391.", {"MEDICAL_RECORD": 1}, ["00-44-2391"]),
    ("Her birthday: 29 Feb 1996. She's at 17 Church Lane, Little Snoring.", {"DATE_OF_BIRTH": 1, "ADDRESS": 1},
     ["29 Feb 1996", "17 Church Lane"]),
    ("SIN 130 692 544, medicare card 1234567890", {"NATIONAL_ID": 1}, ["130 692 544"]),
]

HELD_OUT_UNCHANGED = [
    "I've been on 20 mg of atorvastatin since 2017 and my LDL dropped from 160 to 95.",
    "My peak flow is 350 L/min and I use 2 puffs of albuterol every 4 hours as needed.",
    "Is 37.8 C a fever for a 2 year old? She also had 3 wet diapers today.",
    "Take amoxicillin 875/125 twice a day for 10 days; my INR target is 2-3.",
    "The hospital website nhs.uk says I should wait 48 hours. Call 111 or 999 in an emergency.",
    "My glucose readings were 110, 145 and 182 this week, and my A1c is 6.4.",
    "I walk 10,000 steps on most days and sleep about 6-7 hours a night.",
    "I had COVID in March and again in the fall; Paxlovid 300/100 mg was prescribed.",
    "I'm 5'4\" and 130 lbs. Back in the 1990s I smoked.",
    "I live at home with 2 dogs and my Apt. complex has stairs.",
    "St John's wort 300 mg three times a day; take 2 tablets at 8 and 20 hours.",
    "My PSA went from 4.1 to 6.3 in 18 months, is 1 biopsy enough?",
    "I need 3 Main Street Pharmacy refills, er, three refills from Main Street Pharmacy.",
    "Surgery on my L4-L5 disc, then 6 weeks of PT, 2x per week.",
]


def test_held_out_group(redactor):
    planted = caught = spans = right_kind = extra = 0
    for text, counts, values in HELD_OUT:
        out = redactor.redact(text)
        planted += len(values)
        caught += sum(value.lower() not in out.text.lower() for value in values)
        spans += sum(counts.values())
        right_kind += sum(min(out.counts.get(kind, 0), n) for kind, n in counts.items())
        extra += sum(max(0, n - counts.get(kind, 0)) for kind, n in out.counts.items())
    false_changes = sum(redactor.redact(text).text != text for text in HELD_OUT_UNCHANGED)
    print(f"held out: {caught}/{planted} values caught, {right_kind}/{spans} spans of the right kind, {extra} "
          f"spans more, {false_changes}/{len(HELD_OUT_UNCHANGED)} clean texts changed")
    # What the group measured (issue 15's report), a floor to raise. Missed: an e-mail written out
    # in words, "14-Mar-2024", a localhost URL; "Jan 3rd '82" loses its day, not its year;
    # "3 Main Street Pharmacy" reads as an address; "medicare card 1234567890" as a phone number.
    assert caught >= 44 and right_kind >= 40 and extra <= 1 and false_changes <= 1


def test_names_from_record_fields(redactor):
    record = {"metadata": {"patient_name": "Maria-José O'Brien", "carers": ["Li Wu", "Tom Hanks"]},
              "participants": [{"name": "Ann Lee"}, {"name": "Bo"}], "user": {"id": 7}}
    names = names_in(record, ["metadata.patient_name", "metadata.carers", "participants.name", "missing.key",
                              "user.id", "metadata"])
    assert names == ["Maria-José O'Brien", "Li Wu", "Tom Hanks", "Ann Lee", "Bo"]
    text = ("Hi, I am maria-josé o'brien. MARIA asked about Li Wu and tom; Ann's son Bo came. "
            "Tommy and Leeds stay, and so does Jo.")
    out = redactor.redact(text, names)
    assert out.text == ("Hi, I am [NAME]. [NAME] asked about [NAME] and [NAME]; [NAME]'s son [NAME] came. "
                        "Tommy and Leeds stay, and so does Jo.")
    assert out.counts == {"NAME": 6}
    assert redactor.redact(text).counts == {}  # no names given: none known


def test_extra_patterns_and_kinds():
    cfg = RedactionConfig(kinds=["EMAIL", "MEDICAL_RECORD"],
                          patterns={"MEDICAL_RECORD": [r"\bPT-\d{6}\b"], "BADGE": [r"\bbadge \d{4}\b"],
                                    "PHONE": [r"\b555-\d{4}\b"]})
    r = Redactor(cfg)
    out = r.redact("PT-123456 wore Badge 4411 and emailed a@b.org from 555-0100 (617) 555-0123 on 03/14/2024.",
                   names=["Wore"])
    # PHONE, DATE and NAME are not among the kinds, not even through the config's patterns.
    assert out.text == "[MEDICAL_RECORD] wore [BADGE] and emailed [EMAIL] from 555-0100 (617) 555-0123 on 03/14/2024."
    assert out.counts == {"BADGE": 1, "EMAIL": 1, "MEDICAL_RECORD": 1}
    assert r.version != Redactor(RedactionConfig(kinds=["EMAIL"])).version
    nothing = Redactor(RedactionConfig(kinds=[]))
    assert nothing.redact("jane@gmail.com", ["Jane"]) == ("jane@gmail.com", {})


def test_a_bad_pattern_or_region_is_named():
    with pytest.raises(ValueError, match=r"logs.redaction.patterns.BADGE\[1\] is not a valid regex"):
        Redactor(RedactionConfig(patterns={"BADGE": [r"\d+", r"(unclosed"]}))
    with pytest.raises(ValueError, match=r"logs.redaction.phone_regions: UK not a region phonenumbers knows"):
        Redactor(RedactionConfig(phone_regions=["US", "UK"]))


def test_ner_model_that_is_not_installed_is_one_clear_line(tmp_path):
    with pytest.raises(ValueError) as e:
        Redactor(RedactionConfig(ner_model="en_core_web_nothere"))
    assert str(e.value).startswith("logs.redaction.ner_model en_core_web_nothere is neither an installed spaCy "
                                   "package nor a folder: install")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=f"logs.redaction.ner_model {tmp_path} is not a spaCy pipeline"):
        Redactor(RedactionConfig(ner_model=str(tmp_path)))


def test_ner_model_folder_gives_person_names_only(tmp_path):
    # A pipeline of rules stands in for a trained NER model: PERSON becomes NAME, a place stays.
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "PERSON", "pattern": "Maria Gonzalez"},
                                               {"label": "GPE", "pattern": "Boston"},
                                               {"label": "ORG", "pattern": "Mass General"}])
    nlp.to_disk(tmp_path / "ner")
    r = Redactor(RedactionConfig(ner_model=str(tmp_path / "ner")))
    out = r.redact("Maria Gonzalez was seen at Mass General in Boston, email maria@gmail.com")
    assert out == ("[NAME] was seen at Mass General in Boston, email [EMAIL]", {"EMAIL": 1, "NAME": 1})


def test_starts_offline_and_fast(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("redaction reached for the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(redaction._SUFFIXES, "_extractor", None)  # the suffix list is read again, offline
    start = time.perf_counter()
    r = Redactor(RedactionConfig())
    out = r.redact("Write to jane.doe@gmail.com or see https://portal.example.org/p/1")
    assert time.perf_counter() - start < 5  # about 0.5 s on two busy cores
    assert out.counts == {"EMAIL": 1, "URL": 1}
    assert r.version.startswith("presidio-2.")
