//! Number normalisation (spec §4.3) and context presets (spec §4.4).

/// Normalise dialed digits: a leading `+` means international (just drop
/// it); otherwise strip one leading `8`, then strip `10` when more than 10
/// digits remain, prepend the country code to exactly 10 digits, and country +
/// city code to fewer. `None` when `dialed` is not `+`? digits.
pub fn normalise(dialed: &str, country: &str, city: &str) -> Option<String> {
    todo!("{dialed} {country} {city}")
}

/// The dialplan regex source of a context preset, `None` for an unknown name.
pub fn preset(context: &str, country: &str, city: &str) -> Option<String> {
    todo!("{context} {country} {city}")
}
