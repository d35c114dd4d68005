from avatar.pipeline.text import clean_reply, split_sentences


def test_split_sentences() -> None:
    assert split_sentences("It was amazing. The view! Would you go? Yes") == [
        "It was amazing.",
        "The view!",
        "Would you go?",
        "Yes",
    ]
    assert split_sentences("It cost 3.5 million dollars.") == ["It cost 3.5 million dollars."]


def test_clean_reply_keeps_two_whole_sentences_and_no_markup() -> None:
    raw = "Eileen: **Flying** was amazing. I loved it 🚀! We orbited Earth. And then the"
    assert clean_reply(raw) == "Flying was amazing. I loved it!"
    assert clean_reply("Just a fragment without end") == "Just a fragment without end"
    assert clean_reply("   ") == ""
