//! User names: which are allowed, and when two are too alike to share a
//! network. Pure functions, no I/O.
//!
//! The rule is stricter than "any visible text", so that a name shown on a
//! screen is the name that was typed:
//!
//! - 1 to [`MAX_NAME`] characters;
//! - ASCII: printable, without space or `:` (which ends the name in a
//!   chat line);
//! - beyond ASCII: only characters that Unicode's General Security Profile
//!   (UTS #39, Identifier_Status=Allowed) allows in identifiers: letters,
//!   marks and digits of scripts in current use. That refuses every
//!   invisible, format, bidirectional-control and default-ignorable
//!   character (a zero-width space, a right-to-left override), compatibility
//!   forms (fullwidth `ｂｏｂ`), symbols and emoji.
//!
//! Two names are the same name when their [`skeleton`]s are equal:
//! case-folded, then mapped to their confusable prototypes (UTS #39
//! confusables), then case-folded again. `bob`, `Bob`, `BOB`, `bоb`
//! (Cyrillic о) and `b0b` all have the skeleton `bob`. The Unicode tables
//! come from the `unicode-security` crate and the standard library, never
//! from this file.

use unicode_security::GeneralSecurityProfile;
use unicode_security::general_security_profile::IdentifierType;

use crate::proto::wire::MAX_NAME;

/// Whether `name` may be used as a user name (see the module docs);
/// the error says which character is refused and why.
///
/// # Errors
///
/// A one-line reason, e.g. `U+200B is invisible (a format character)`.
pub fn valid(name: &str) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 {
        return Err("a name needs at least one character".into());
    }
    if n > MAX_NAME {
        return Err(format!("a name has at most {MAX_NAME} characters"));
    }
    for c in name.chars() {
        if let Some(why) = refused(c) {
            return Err(format!("{} {why}", describe(c)));
        }
    }
    Ok(())
}

/// Why `c` may not be in a name, if it may not.
fn refused(c: char) -> Option<&'static str> {
    if c.is_ascii() {
        return match c {
            ':' => Some("ends a name in chat lines"),
            ' ' => Some("is white space"),
            c if c.is_ascii_control() => Some("is a control character"),
            _ => None,
        };
    }
    if c.is_control() {
        return Some("is a control character");
    }
    if c.is_whitespace() {
        return Some("is white space");
    }
    if c.identifier_allowed() {
        return None;
    }
    Some(match c.identifier_type() {
        _ if invisible(c) => "is invisible (a format or default-ignorable character)",
        Some(IdentifierType::Not_NFKC) => "is a compatibility form of another character",
        Some(IdentifierType::Not_XID) => "is not a letter or digit (symbols and emoji are refused)",
        _ => "is not a letter or digit of a script in current use",
    })
}

/// Whether `c` is default-ignorable (zero-width, joiners, bidi controls,
/// the byte order mark...), as UTS #39's identifier types say. (Only the
/// wording of the error depends on it: such characters are refused
/// anyway.)
fn invisible(c: char) -> bool {
    c.identifier_type() == Some(IdentifierType::Default_Ignorable)
}

/// `c` quoted, if it can be seen, and its code point.
fn describe(c: char) -> String {
    if c.is_control() || c.is_whitespace() && c != ' ' || invisible(c) {
        format!("U+{:04X}", u32::from(c))
    } else {
        format!("{c:?} (U+{:04X})", u32::from(c))
    }
}

/// Case folding from the standard library's Unicode tables: upper case,
/// then lower case, character by character (so `ß` folds like `ss`, final
/// `ς` like `σ`, as full case folding does).
pub fn fold(s: &str) -> String {
    s.chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

/// The form two names are compared in: equal skeletons are the same name.
/// Case-insensitive and confusable-insensitive (see the module docs).
pub fn skeleton(name: &str) -> String {
    let folded = fold(name);
    let proto: String = unicode_security::skeleton(&folded).collect();
    fold(&proto)
}

/// Whether `a` and `b` would be taken for the same name.
pub fn same(a: &str, b: &str) -> bool {
    skeleton(a) == skeleton(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_share_a_skeleton_or_are_refused() {
        let bob = skeleton("bob");
        for n in ["Bob", "BOB", "b\u{43e}b", "bOb", "b0b"] {
            assert_eq!(skeleton(n), bob, "{n:?}");
            assert!(same(n, "bob"), "{n:?}");
        }
        // Invisible characters do not make a new name: refused, and ignored
        // by the skeleton anyway.
        for n in ["bob\u{200b}", "b\u{200d}ob", "\u{feff}bob", "bob\u{2060}"] {
            assert!(valid(n).is_err(), "{n:?}");
            assert_eq!(skeleton(n), bob, "{n:?}");
        }
        // The Cyrillic look-alike is a valid name of its own script: only
        // the skeleton keeps it from joining next to bob.
        assert_eq!(valid("b\u{43e}b"), Ok(()));
        assert!(!same("bob", "rob"));
        assert!(!same("alice", "alicia"));
        // Case folding beyond ASCII.
        assert!(same("STRASSE", "straße"));
        assert!(same("ΣΟΦΙΑ", "σοφια"));
        assert!(same("Ǆ", "ǆ"));
    }

    #[test]
    fn valid_names() {
        for n in [
            "alice",
            "Bob_2",
            "x.y-z",
            "josé",
            "王小明",
            "Σοφία",
            "a!@#",
            &"y".repeat(MAX_NAME),
            "é",
            "e\u{301}",
        ] {
            assert_eq!(valid(n), Ok(()), "{n:?}");
        }
    }

    #[test]
    fn refused_names_say_why() {
        let cases = [
            ("", "at least one"),
            ("a b", "' ' (U+0020) is white space"),
            ("a:b", "':' (U+003A) ends a name"),
            ("a\tb", "U+0009 is a control"),
            ("a\u{85}b", "U+0085 is a control"),
            ("bob\u{200b}", "U+200B is invisible"),
            ("ab\u{202e}c", "U+202E is invisible"),
            ("ab\u{2066}c", "U+2066 is invisible"),
            ("\u{ad}x", "U+00AD is invisible"),
            ("x\u{3000}", "U+3000 is white space"),
            ("\u{ff42}ob", "'ｂ' (U+FF42) is a compatibility form"),
            ("bob😀", "'😀' (U+1F600) is not a letter or digit"),
            ("a\u{0600}", "U+0600"),
        ];
        for (n, want) in cases {
            match valid(n) {
                Ok(()) => panic!("{n:?} accepted"),
                Err(e) => assert!(e.contains(want), "{n:?}: {e:?} lacks {want:?}"),
            }
        }
        assert!(valid(&"y".repeat(MAX_NAME + 1)).is_err());
    }
}
