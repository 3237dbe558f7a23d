"""What a persona gave: a phone number or an address in the giving line first, a social handle only when neither is there
(issue 22 item 4). Each line is labelled by hand; the ask before it is what a line that names nothing gave."""

from __future__ import annotations

import pytest

from simulator.conversation.episode import given_kind

NUMBER_ASK, EMAIL_ASK, SOCIAL_ASK = "Can I get your number?", "Do you have an email I could write to?", "What's your Instagram?"

GIVEN = [  # (the persona's giving line, the practitioner's ask before it, what was given)
    ("I'm not on Instagram, but sure, it's 555 0199.", NUMBER_ASK, "number"),
    ("Text me at 555 0199, I never check voicemail.", NUMBER_ASK, "number"),
    ("Sure! It's 07700 900123.", NUMBER_ASK, "number"),
    ("Here you go: +44 7700 900 123.", SOCIAL_ASK, "number"),
    ("My number's (415) 555-0132, call me whenever.", NUMBER_ASK, "number"),
    ("Okay, 555-0147. Don't lose it!", NUMBER_ASK, "number"),
    ("I don't really do Snapchat, but my number is 555 0101.", SOCIAL_ASK, "number"),
    ("I can't handle another group chat, so just call me: 555 0188.", NUMBER_ASK, "number"),
    ("Oh, snap, I almost forgot! Here's my number, 555 0177.", NUMBER_ASK, "number"),
    ("Sure, I'd like that.", NUMBER_ASK, "number"),
    ("Yes, of course, let me write it down for you.", NUMBER_ASK, "number"),
    ("Sure, my email is sam@example.com.", EMAIL_ASK, "email"),
    ("It's jo.smith+work@mail.example.org, I check it daily.", NUMBER_ASK, "email"),
    ("I'm not on Facebook, but you can email me at alex@example.net.", SOCIAL_ASK, "email"),
    ("Drop me an email, it's lee_k@example.co.uk.", NUMBER_ASK, "email"),
    ("I hate phone calls, so here's my email: rin@example.com.", NUMBER_ASK, "email"),
    ("Sure, email works best for me.", NUMBER_ASK, "email"),
    ("Yes, write it down: my e-mail is the same as my name at gmail.", NUMBER_ASK, "email"),
    ("Of course, here it is.", EMAIL_ASK, "email"),
    ("Sure, I'm @sam.smiles on Instagram.", SOCIAL_ASK, "social_handle"),
    ("Find me on insta, it's @dana_draws.", NUMBER_ASK, "social_handle"),
    ("I'd rather not give my number yet, but follow me on Instagram: @kit.k.", NUMBER_ASK, "social_handle"),
    ("My handle is @mo_runs, add me!", NUMBER_ASK, "social_handle"),
    ("I'm on TikTok as @jamiebakes.", SOCIAL_ASK, "social_handle"),
    ("Add me on Snapchat, I'm lucyloo22.", NUMBER_ASK, "social_handle"),
    ("Just DM me on Twitter.", EMAIL_ASK, "social_handle"),
    ("Sure, look me up on LinkedIn, Priya Shah.", EMAIL_ASK, "social_handle"),
    ("Yes! Here's my insta.", SOCIAL_ASK, "social_handle"),
    ("Okay, it's @theo.", NUMBER_ASK, "social_handle"),
    ("I don't give out my Instagram, but my number is fine: 555 0123.", SOCIAL_ASK, "number"),
    ("I never use email, but my number is 555 0111.", EMAIL_ASK, "number"),
    ("No Instagram, sorry, only email: nat@example.com.", SOCIAL_ASK, "email"),
    ("I don't have Instagram, but call me.", SOCIAL_ASK, "number"),
    ("Not much of an email person, I'm afraid; text me instead.", EMAIL_ASK, "number"),
    ("I'll handle the booking if you send me your details; mine is 555 0190.", EMAIL_ASK, "number"),
]


@pytest.mark.parametrize(("line", "ask", "kind"), GIVEN, ids=[g[0][:40] for g in GIVEN])
def test_what_was_given(line, ask, kind):
    turns = [{"speaker": "practitioner", "text": ask, "intent": "ask"}, {"speaker": "persona", "text": line}]
    assert given_kind(turns) == kind


def test_the_table_is_large_and_varied():
    assert len(GIVEN) >= 30 and {k for *_, k in GIVEN} == {"number", "email", "social_handle"}
