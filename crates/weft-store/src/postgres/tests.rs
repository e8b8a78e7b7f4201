//! The PostgreSQL store's own checks (the conformance suite, against a
//! real server, is in tests/).

use super::*;
use crate::postgres::listen::parse_event;

#[test]
fn no_password_survives_wherever_it_is() {
    for (url, shown) in [
        (
            "postgres://weft:s3cret@db.internal:5432/weft",
            "postgres://weft@db.internal:5432/weft",
        ),
        (
            "postgres://127.0.0.1:99999/db?user=u&password=SECRET&sslmode=require",
            "postgres://127.0.0.1:99999/db?user=u&password=***&sslmode=require",
        ),
        (
            "postgresql://u:p@h?PASSWORD=x",
            "postgresql://u@h?PASSWORD=***",
        ),
        ("postgres://weft@h/db", "postgres://weft@h/db"),
        ("not a url:secret@x", "not a url@x"),
    ] {
        assert_eq!(redacted_url(url), shown);
    }
}

#[test]
fn events_from_other_nodes_are_heard_and_our_own_skipped() {
    let me = "a 1";
    assert_eq!(parse_event("p", me), Some(StoreEvent::Pending));
    assert_eq!(
        parse_event("e b 2 trn-1 trn-0", me),
        Some(StoreEvent::Ended {
            run_id: "trn-1".into(),
            parent_id: Some("trn-0".into())
        })
    );
    assert_eq!(
        parse_event("e b 2 trn-1 -", me),
        Some(StoreEvent::Ended {
            run_id: "trn-1".into(),
            parent_id: None
        })
    );
    assert_eq!(parse_event("e a 1 trn-1 -", me), None);
    assert_eq!(parse_event("c b 2", me), Some(StoreEvent::Canceled));
    assert_eq!(parse_event("c a 1", me), None);
    assert_eq!(parse_event("x", me), None);
}
