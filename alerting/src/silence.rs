//! Alertmanager-compatible silences: the JSON shapes of the v2 API, validation, states, and
//! the rules for expiring and updating. No storage, clock or randomness: callers pass the
//! time in Unix milliseconds and the random bits of new ids.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::matchers::{matchers_match, Labels, MatchOp, Matcher, ParseError};

/// Version of the stored [`Silence`] layout, kept in its field `v`.
pub const FORMAT_VERSION: u32 = 1;
/// Most matchers a silence may have.
pub const MAX_MATCHERS: usize = 64;
/// Longest label name in a silence's matcher, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// Longest value in a silence's matcher, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;
/// Longest `createdBy` and `comment`, in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Longest `id` accepted in a [`PostableSilence`], in bytes.
pub const MAX_ID_BYTES: usize = 64;

/// Longest excerpt of an input quoted in an error message, in bytes.
const MAX_QUOTED_BYTES: usize = 64;
/// 0000-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z, the range RFC 3339 can write.
const MIN_RFC3339_MS: i64 = -62_167_219_200_000;
const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

/// Why a silence was refused or could not be changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SilenceError {
    /// The posted silence breaks a rule; the message says which.
    #[error("invalid silence: {0}")]
    Invalid(String),
    /// Expiring a silence that has already expired.
    #[error("silence already expired")]
    AlreadyExpired,
}

fn invalid(msg: impl Into<String>) -> SilenceError {
    SilenceError::Invalid(msg.into())
}

/// A matcher in the v2 API: `{"name", "value", "isRegex", "isEqual"}`; `isEqual` defaults
/// to true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiMatcher {
    pub name: String,
    pub value: String,
    pub is_regex: bool,
    #[serde(default = "default_true")]
    pub is_equal: bool,
}

fn default_true() -> bool {
    true
}

impl ApiMatcher {
    /// The operator the two flags stand for.
    pub fn op(&self) -> MatchOp {
        MatchOp::from_flags(self.is_regex, self.is_equal)
    }
}

impl From<&Matcher> for ApiMatcher {
    fn from(m: &Matcher) -> Self {
        ApiMatcher {
            name: m.name().to_owned(),
            value: m.value().to_owned(),
            is_regex: m.op().is_regex(),
            is_equal: m.op().is_equal(),
        }
    }
}

impl TryFrom<&ApiMatcher> for Matcher {
    type Error = ParseError;

    fn try_from(m: &ApiMatcher) -> Result<Self, Self::Error> {
        Matcher::new(m.name.as_str(), m.op(), m.value.as_str())
    }
}

/// The body of `POST /api/v2/silences`. An `id` asks to update that silence. Missing
/// fields read as empty, so that [`validate`] names them; unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableSilence {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub matchers: Vec<ApiMatcher>,
    #[serde(default)]
    pub starts_at: String,
    #[serde(default)]
    pub ends_at: String,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
}

/// A posted silence that passed [`validate`], with its matchers compiled and times read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSilence {
    id: Option<String>,
    matchers: Vec<Matcher>,
    starts_at_ms: i64,
    ends_at_ms: i64,
    created_by: String,
    comment: String,
}

impl ValidSilence {
    /// The id of the silence to update; `None` (or an empty id) creates one.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub fn matchers(&self) -> &[Matcher] {
        &self.matchers
    }

    pub fn starts_at_ms(&self) -> i64 {
        self.starts_at_ms
    }

    pub fn ends_at_ms(&self) -> i64 {
        self.ends_at_ms
    }

    pub fn created_by(&self) -> &str {
        &self.created_by
    }

    pub fn comment(&self) -> &str {
        &self.comment
    }
}

/// A silence's state at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    Active,
    Pending,
    Expired,
}

/// `{"state": ...}` in a [`GettableSilence`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceStatus {
    pub state: SilenceState,
}

/// A silence as `GET /api/v2/silences` returns it, times in RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GettableSilence {
    pub id: String,
    pub status: SilenceStatus,
    pub updated_at: String,
    pub matchers: Vec<ApiMatcher>,
    pub starts_at: String,
    pub ends_at: String,
    pub created_by: String,
    pub comment: String,
}

/// A stored silence. Its JSON keeps `v` = [`FORMAT_VERSION`] and the matchers in the API's
/// shape; reading it compiles the matchers again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub v: u32,
    pub id: String,
    #[serde(with = "stored_matchers")]
    pub matchers: Vec<Matcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub updated_at_ms: i64,
    pub created_by: String,
    pub comment: String,
}

mod stored_matchers {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::ApiMatcher;
    use crate::matchers::Matcher;

    pub fn serialize<S: Serializer>(ms: &[Matcher], s: S) -> Result<S::Ok, S::Error> {
        ms.iter()
            .map(ApiMatcher::from)
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Matcher>, D::Error> {
        Vec::<ApiMatcher>::deserialize(d)?
            .iter()
            .map(|m| Matcher::try_from(m).map_err(D::Error::custom))
            .collect()
    }
}

/// What [`update`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The existing silence, changed in place under its own id.
    InPlace(Silence),
    /// The existing silence stays as history: `expired` is it expired now (`None` if it
    /// had already expired); `new` is to be stored as a new silence, see [`Silence::create`].
    Replace {
        expired: Option<Silence>,
        new: ValidSilence,
    },
}

impl Silence {
    /// A new silence with an id from `random`; a start in the past becomes `now_ms`.
    pub fn create(v: ValidSilence, random: u128, now_ms: i64) -> Silence {
        Silence {
            v: FORMAT_VERSION,
            id: new_id(random),
            matchers: v.matchers,
            starts_at_ms: v.starts_at_ms.max(now_ms),
            ends_at_ms: v.ends_at_ms,
            updated_at_ms: now_ms,
            created_by: v.created_by,
            comment: v.comment,
        }
    }

    /// Pending before the start, expired from the end on, active in between.
    pub fn state(&self, now_ms: i64) -> SilenceState {
        if now_ms < self.starts_at_ms {
            SilenceState::Pending
        } else if now_ms >= self.ends_at_ms {
            SilenceState::Expired
        } else {
            SilenceState::Active
        }
    }

    /// Whether the silence's matchers all match the labels (whatever its state). A silence
    /// without matchers, which [`validate`] never lets through, matches nothing.
    pub fn matches(&self, labels: &Labels) -> bool {
        !self.matchers.is_empty() && matchers_match(&self.matchers, labels)
    }

    /// Ends the silence now: an active one ends at `now_ms`; a pending one starts and ends
    /// at `now_ms`.
    pub fn expire(&mut self, now_ms: i64) -> Result<(), SilenceError> {
        match self.state(now_ms) {
            SilenceState::Expired => Err(SilenceError::AlreadyExpired),
            SilenceState::Active | SilenceState::Pending => {
                self.end_now(now_ms);
                Ok(())
            }
        }
    }

    fn end_now(&mut self, now_ms: i64) {
        if self.state(now_ms) == SilenceState::Pending {
            self.starts_at_ms = now_ms;
        }
        self.ends_at_ms = now_ms;
        self.updated_at_ms = now_ms;
    }

    /// The silence in the v2 API's shape, with its state at `now_ms`.
    pub fn to_gettable(&self, now_ms: i64) -> GettableSilence {
        GettableSilence {
            id: self.id.clone(),
            status: SilenceStatus {
                state: self.state(now_ms),
            },
            updated_at: format_rfc3339_ms(self.updated_at_ms),
            matchers: self.matchers.iter().map(ApiMatcher::from).collect(),
            starts_at: format_rfc3339_ms(self.starts_at_ms),
            ends_at: format_rfc3339_ms(self.ends_at_ms),
            created_by: self.created_by.clone(),
            comment: self.comment.clone(),
        }
    }
}

/// Checks a posted silence against Alertmanager's rules and this module's size caps.
pub fn validate(p: &PostableSilence, now_ms: i64) -> Result<ValidSilence, SilenceError> {
    let id = p.id.clone().filter(|id| !id.is_empty());
    if id.as_ref().is_some_and(|id| id.len() > MAX_ID_BYTES) {
        return Err(invalid(format!("id longer than {MAX_ID_BYTES} bytes")));
    }
    if p.matchers.is_empty() {
        return Err(invalid("at least one matcher required"));
    }
    if p.matchers.len() > MAX_MATCHERS {
        return Err(invalid(format!(
            "too many matchers: {} (limit {MAX_MATCHERS})",
            p.matchers.len()
        )));
    }
    let mut matchers = Vec::with_capacity(p.matchers.len());
    for (i, m) in p.matchers.iter().enumerate() {
        if m.name.len() > MAX_NAME_BYTES {
            return Err(invalid(format!(
                "invalid label matcher {i}: label name longer than {MAX_NAME_BYTES} bytes"
            )));
        }
        if m.value.len() > MAX_VALUE_BYTES {
            return Err(invalid(format!(
                "invalid label matcher {i}: value longer than {MAX_VALUE_BYTES} bytes"
            )));
        }
        let matcher =
            Matcher::try_from(m).map_err(|e| invalid(format!("invalid label matcher {i}: {e}")))?;
        matchers.push(matcher);
    }
    if matchers.iter().all(matches_empty) {
        return Err(invalid(
            "at least one matcher must not match the empty string",
        ));
    }
    let starts_at_ms = read_time("startsAt", &p.starts_at)?;
    let ends_at_ms = read_time("endsAt", &p.ends_at)?;
    if ends_at_ms <= starts_at_ms {
        return Err(invalid("start time must be before end time"));
    }
    if ends_at_ms < now_ms {
        return Err(invalid("end time can't be in the past"));
    }
    check_text("createdBy", &p.created_by)?;
    check_text("comment", &p.comment)?;
    Ok(ValidSilence {
        id,
        matchers,
        starts_at_ms,
        ends_at_ms,
        created_by: p.created_by.clone(),
        comment: p.comment.clone(),
    })
}

/// Alertmanager's test: only `=` and `=~` count as matching the empty string.
fn matches_empty(m: &Matcher) -> bool {
    m.op().is_equal() && m.matches_value("")
}

fn read_time(field: &str, s: &str) -> Result<i64, SilenceError> {
    if s.is_empty() {
        return Err(invalid(format!("{field} is required")));
    }
    parse_rfc3339_ms(s).map_err(|e| invalid(format!("{field}: {e}")))
}

fn check_text(field: &str, s: &str) -> Result<(), SilenceError> {
    if s.trim().is_empty() {
        return Err(invalid(format!("{field} is required")));
    }
    if s.len() > MAX_TEXT_BYTES {
        return Err(invalid(format!(
            "{field} longer than {MAX_TEXT_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Applies a posted update to `existing` (the silence with the posted id) as Alertmanager
/// does: in place only if the matchers are unchanged and the existing silence is active
/// (start unchanged to the second, end not before now) or pending (start not before now);
/// otherwise the existing one is expired, unless it already is, and a new one replaces it.
pub fn update(existing: &Silence, p: ValidSilence, now_ms: i64) -> Update {
    if can_update(existing, &p, now_ms) {
        return Update::InPlace(Silence {
            v: FORMAT_VERSION,
            id: existing.id.clone(),
            matchers: p.matchers,
            starts_at_ms: p.starts_at_ms,
            ends_at_ms: p.ends_at_ms,
            updated_at_ms: now_ms,
            created_by: p.created_by,
            comment: p.comment,
        });
    }
    let expired = (existing.state(now_ms) != SilenceState::Expired).then(|| {
        let mut old = existing.clone();
        old.end_now(now_ms);
        old
    });
    Update::Replace { expired, new: p }
}

fn can_update(a: &Silence, b: &ValidSilence, now_ms: i64) -> bool {
    if a.matchers != b.matchers {
        return false;
    }
    match a.state(now_ms) {
        SilenceState::Active => {
            a.starts_at_ms.div_euclid(1000) == b.starts_at_ms.div_euclid(1000)
                && b.ends_at_ms >= now_ms
        }
        SilenceState::Pending => b.starts_at_ms >= now_ms,
        SilenceState::Expired => false,
    }
}

/// A 36-character id, 8-4-4-4-12 lowercase hex, from 128 random bits; the version and
/// variant bits are set so that it is a valid version 4 UUID.
pub fn new_id(random: u128) -> String {
    let r = (random & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        r >> 96,
        (r >> 80) & 0xffff,
        (r >> 64) & 0xffff,
        (r >> 48) & 0xffff,
        r & 0xffff_ffff_ffff
    )
}

/// Unix milliseconds from an RFC 3339 time; digits past the millisecond are dropped
/// (rounding towards the past).
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, String> {
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("invalid RFC 3339 time {:?}: {e}", clip(s)))?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000))
        .map_err(|_| format!("time out of range: {:?}", clip(s)))
}

/// RFC 3339 in UTC with exactly three fraction digits, e.g. `2027-01-15T08:00:00.123Z`.
/// Times outside years 0000 to 9999 are clamped to that range.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let ms = ms.clamp(MIN_RFC3339_MS, MAX_RFC3339_MS);
    match OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => String::from("1970-01-01T00:00:00.000Z"),
    }
}

fn clip(s: &str) -> String {
    crate::matchers::clip_to(s, MAX_QUOTED_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matchers::parse_matchers;

    /// 2027-01-15T08:00:00.000Z
    const T0: i64 = 1_800_000_000_000;
    const MIN: i64 = 60_000;
    const HOUR: i64 = 3_600_000;

    fn am(name: &str, value: &str, is_regex: bool, is_equal: bool) -> ApiMatcher {
        ApiMatcher {
            name: name.to_owned(),
            value: value.to_owned(),
            is_regex,
            is_equal,
        }
    }

    fn post(starts: i64, ends: i64) -> PostableSilence {
        PostableSilence {
            id: None,
            matchers: vec![am("alertname", "EtcdNoLeader", false, true)],
            starts_at: format_rfc3339_ms(starts),
            ends_at: format_rfc3339_ms(ends),
            created_by: "ops".to_owned(),
            comment: "maintenance".to_owned(),
        }
    }

    fn invalid_msg(p: &PostableSilence, now: i64) -> String {
        match validate(p, now) {
            Ok(v) => panic!("accepted {v:?}"),
            Err(SilenceError::Invalid(m)) => m,
            Err(e) => panic!("unexpected {e}"),
        }
    }

    fn silence(starts: i64, ends: i64) -> Silence {
        let v = validate(&post(starts, ends), starts).expect("valid");
        Silence::create(v, 7, starts)
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn rfc3339_round_trip() {
        assert_eq!(format_rfc3339_ms(T0), "2027-01-15T08:00:00.000Z");
        assert_eq!(format_rfc3339_ms(T0 + 123), "2027-01-15T08:00:00.123Z");
        assert_eq!(parse_rfc3339_ms("2027-01-15T08:00:00.123Z"), Ok(T0 + 123));
        assert_eq!(parse_rfc3339_ms("2027-01-15T08:00:00Z"), Ok(T0));
        assert_eq!(parse_rfc3339_ms("2027-01-15T10:00:00+02:00"), Ok(T0));
        assert_eq!(
            parse_rfc3339_ms("2027-01-15T08:00:00.123999999Z"),
            Ok(T0 + 123)
        );
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59.9995Z"), Ok(-1));
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn rfc3339_limits_and_errors() {
        assert_eq!(format_rfc3339_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339_ms(i64::MIN), "0000-01-01T00:00:00.000Z");
        assert_eq!(
            parse_rfc3339_ms("9999-12-31T23:59:59.999Z"),
            Ok(MAX_RFC3339_MS)
        );
        assert_eq!(parse_rfc3339_ms("0000-01-01T00:00:00Z"), Ok(MIN_RFC3339_MS));
        for bad in ["", "2027-01-15", "yesterday", "2027-13-01T00:00:00Z"] {
            let e = parse_rfc3339_ms(bad).expect_err(bad);
            assert!(e.starts_with("invalid RFC 3339 time"), "{e}");
        }
        let e = parse_rfc3339_ms(&"9".repeat(10_000)).expect_err("long");
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn ids_are_v4_uuids() {
        assert_eq!(new_id(0), "00000000-0000-4000-8000-000000000000");
        assert_eq!(new_id(u128::MAX), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = new_id(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(id, "01234567-89ab-4def-8123-456789abcdef");
        assert_eq!(id.len(), 36);
        assert_ne!(new_id(1), new_id(2));
    }

    #[test]
    fn api_matcher_json() {
        let m: ApiMatcher =
            serde_json::from_str(r#"{"name":"a","value":"b","isRegex":false}"#).expect("json");
        assert!(m.is_equal);
        assert_eq!(m.op(), MatchOp::Equal);
        let cases = [
            (false, true, MatchOp::Equal),
            (false, false, MatchOp::NotEqual),
            (true, true, MatchOp::Regex),
            (true, false, MatchOp::NotRegex),
        ];
        for (is_regex, is_equal, op) in cases {
            let api = am("a", "x.*", is_regex, is_equal);
            let m = Matcher::try_from(&api).expect("matcher");
            assert_eq!(m.op(), op);
            assert_eq!(ApiMatcher::from(&m), api);
        }
        let json = serde_json::to_value(am("a", "b", true, false)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"name": "a", "value": "b", "isRegex": true, "isEqual": false})
        );
        assert!(serde_json::from_str::<ApiMatcher>(r#"{"name":"a","value":"b"}"#).is_err());
    }

    #[test]
    fn postable_json() {
        let p: PostableSilence = serde_json::from_str(
            r#"{
                "matchers": [{"name": "job", "value": "etcd", "isRegex": false}],
                "startsAt": "2027-01-15T08:00:00Z",
                "endsAt": "2027-01-15T09:00:00Z",
                "createdBy": "ops",
                "comment": "upgrade",
                "status": {"state": "active"},
                "somethingNew": 1
            }"#,
        )
        .expect("json");
        assert_eq!(p.id, None);
        let v = validate(&p, T0).expect("valid");
        assert_eq!(v.id(), None);
        assert_eq!(v.starts_at_ms(), T0);
        assert_eq!(v.ends_at_ms(), T0 + HOUR);
        assert_eq!(v.created_by(), "ops");
        assert_eq!(v.comment(), "upgrade");
        assert_eq!(v.matchers(), parse_matchers(r#"job="etcd""#).expect("m"));

        let p: PostableSilence =
            serde_json::from_str(r#"{"id": "abc", "matchers": []}"#).expect("json");
        assert_eq!(p.id.as_deref(), Some("abc"));
        let p: PostableSilence = serde_json::from_str(r#"{"id": null}"#).expect("json");
        assert_eq!(p.id, None);
    }

    #[test]
    fn validate_accepts_and_keeps_the_id() {
        let mut p = post(T0, T0 + HOUR);
        p.id = Some("0f0e-id".to_owned());
        assert_eq!(validate(&p, T0).expect("valid").id(), Some("0f0e-id"));
        p.id = Some(String::new());
        assert_eq!(validate(&p, T0).expect("valid").id(), None);
        p.id = Some("x".repeat(MAX_ID_BYTES + 1));
        assert_eq!(invalid_msg(&p, T0), "id longer than 64 bytes");
    }

    #[test]
    fn validate_needs_matchers() {
        let mut p = post(T0, T0 + HOUR);
        p.matchers.clear();
        assert_eq!(invalid_msg(&p, T0), "at least one matcher required");
        p.matchers = vec![am("a", "b", false, true); MAX_MATCHERS];
        assert!(validate(&p, T0).is_ok());
        p.matchers.push(am("a", "b", false, true));
        assert_eq!(invalid_msg(&p, T0), "too many matchers: 65 (limit 64)");
    }

    #[test]
    fn validate_checks_each_matcher() {
        let mut p = post(T0, T0 + HOUR);
        p.matchers.push(am("", "x", false, true));
        assert_eq!(
            invalid_msg(&p, T0),
            "invalid label matcher 1: invalid matcher: the label name is empty"
        );
        p.matchers[1] = am("b", "(", true, true);
        assert_eq!(
            invalid_msg(&p, T0),
            r#"invalid label matcher 1: invalid regex "(" for label "b": unclosed group"#
        );
        p.matchers[1] = am(&"n".repeat(MAX_NAME_BYTES + 1), "x", false, true);
        assert_eq!(
            invalid_msg(&p, T0),
            "invalid label matcher 1: label name longer than 1024 bytes"
        );
        p.matchers[1] = am("b", &"v".repeat(MAX_VALUE_BYTES + 1), false, true);
        assert_eq!(
            invalid_msg(&p, T0),
            "invalid label matcher 1: value longer than 1024 bytes"
        );
        p.matchers[1] = am("service.name", &"v".repeat(MAX_VALUE_BYTES), false, true);
        assert!(validate(&p, T0).is_ok());
    }

    #[test]
    fn validate_refuses_matchers_that_all_match_empty() {
        let mut p = post(T0, T0 + HOUR);
        p.matchers = vec![am("a", "", false, true), am("b", ".*", true, true)];
        assert_eq!(
            invalid_msg(&p, T0),
            "at least one matcher must not match the empty string"
        );
        p.matchers.push(am("c", "x", false, true));
        assert!(validate(&p, T0).is_ok());
        p.matchers = vec![am("a", "x", false, false)];
        assert!(validate(&p, T0).is_ok(), "Alertmanager accepts a lone !=");
        p.matchers = vec![am("a", "x", true, false)];
        assert!(validate(&p, T0).is_ok(), "Alertmanager accepts a lone !~");
    }

    #[test]
    fn validate_checks_times() {
        assert_eq!(
            invalid_msg(&post(T0, T0), T0),
            "start time must be before end time"
        );
        assert_eq!(
            invalid_msg(&post(T0, T0 - 1), T0),
            "start time must be before end time"
        );
        assert_eq!(
            invalid_msg(&post(T0 - HOUR, T0 - MIN), T0),
            "end time can't be in the past"
        );
        assert!(validate(&post(T0 - HOUR, T0), T0).is_ok());
        let mut p = post(T0, T0 + HOUR);
        p.starts_at = "soon".to_owned();
        assert!(invalid_msg(&p, T0).starts_with(r#"startsAt: invalid RFC 3339 time "soon""#));
        p.starts_at.clear();
        assert_eq!(invalid_msg(&p, T0), "startsAt is required");
        let mut p = post(T0, T0 + HOUR);
        p.ends_at.clear();
        assert_eq!(invalid_msg(&p, T0), "endsAt is required");
    }

    #[test]
    fn validate_checks_author_and_comment() {
        let mut p = post(T0, T0 + HOUR);
        p.created_by = " ".to_owned();
        assert_eq!(invalid_msg(&p, T0), "createdBy is required");
        p.created_by = "x".repeat(MAX_TEXT_BYTES + 1);
        assert_eq!(invalid_msg(&p, T0), "createdBy longer than 4096 bytes");
        let mut p = post(T0, T0 + HOUR);
        p.comment.clear();
        assert_eq!(invalid_msg(&p, T0), "comment is required");
        p.comment = "x".repeat(MAX_TEXT_BYTES + 1);
        assert_eq!(invalid_msg(&p, T0), "comment longer than 4096 bytes");
        p.comment = "x".repeat(MAX_TEXT_BYTES);
        assert!(validate(&p, T0).is_ok());
        assert_eq!(
            validate(&PostableSilence::default(), T0)
                .expect_err("empty")
                .to_string(),
            "invalid silence: at least one matcher required"
        );
    }

    #[test]
    fn create_moves_a_past_start_to_now() {
        let v = validate(&post(T0 - HOUR, T0 + HOUR), T0).expect("valid");
        let s = Silence::create(v, 1, T0);
        assert_eq!(s.v, FORMAT_VERSION);
        assert_eq!(s.id, new_id(1));
        assert_eq!(s.starts_at_ms, T0);
        assert_eq!(s.ends_at_ms, T0 + HOUR);
        assert_eq!(s.updated_at_ms, T0);
        let v = validate(&post(T0 + MIN, T0 + HOUR), T0).expect("valid");
        assert_eq!(Silence::create(v, 1, T0).starts_at_ms, T0 + MIN);
    }

    #[test]
    fn states() {
        let s = silence(T0, T0 + HOUR);
        assert_eq!(s.state(T0 - 1), SilenceState::Pending);
        assert_eq!(s.state(T0), SilenceState::Active);
        assert_eq!(s.state(T0 + HOUR - 1), SilenceState::Active);
        assert_eq!(s.state(T0 + HOUR), SilenceState::Expired);
    }

    #[test]
    fn matches_labels() {
        let s = silence(T0, T0 + HOUR);
        assert!(s.matches(&labels(&[("alertname", "EtcdNoLeader"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("alertname", "Other")])));
        let mut empty = s.clone();
        empty.matchers.clear();
        assert!(!empty.matches(&labels(&[])));
    }

    #[test]
    fn expire_active() {
        let mut s = silence(T0, T0 + HOUR);
        s.expire(T0 + MIN).expect("expire");
        assert_eq!((s.starts_at_ms, s.ends_at_ms), (T0, T0 + MIN));
        assert_eq!(s.updated_at_ms, T0 + MIN);
        assert_eq!(s.state(T0 + MIN), SilenceState::Expired);
    }

    #[test]
    fn expire_pending() {
        let mut s = silence(T0, T0 + HOUR);
        s.expire(T0 - MIN).expect("expire");
        assert_eq!((s.starts_at_ms, s.ends_at_ms), (T0 - MIN, T0 - MIN));
        assert_eq!(s.state(T0 - MIN), SilenceState::Expired);
    }

    #[test]
    fn expire_expired() {
        let mut s = silence(T0, T0 + HOUR);
        let before = s.clone();
        assert_eq!(s.expire(T0 + HOUR), Err(SilenceError::AlreadyExpired));
        assert_eq!(s, before);
        assert_eq!(
            SilenceError::AlreadyExpired.to_string(),
            "silence already expired"
        );
    }

    fn repost(s: &Silence, starts: i64, ends: i64, now: i64) -> ValidSilence {
        let mut p = post(starts, ends);
        p.id = Some(s.id.clone());
        p.comment = "extended".to_owned();
        validate(&p, now).expect("valid")
    }

    #[test]
    fn update_active_in_place() {
        let s = silence(T0, T0 + HOUR);
        let now = T0 + MIN;
        match update(&s, repost(&s, T0 + 999, T0 + 2 * HOUR, now), now) {
            Update::InPlace(u) => {
                assert_eq!(u.id, s.id);
                assert_eq!(u.ends_at_ms, T0 + 2 * HOUR);
                assert_eq!(u.comment, "extended");
                assert_eq!(u.updated_at_ms, now);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn update_active_with_a_new_start_replaces() {
        let s = silence(T0, T0 + HOUR);
        let now = T0 + MIN;
        let v = repost(&s, T0 + 1000, T0 + 2 * HOUR, now);
        match update(&s, v.clone(), now) {
            Update::Replace { expired, new } => {
                let old = expired.expect("expired copy");
                assert_eq!(old.id, s.id);
                assert_eq!((old.starts_at_ms, old.ends_at_ms), (T0, now));
                assert_eq!(old.updated_at_ms, now);
                assert_eq!(new, v);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn update_with_other_matchers_replaces() {
        let s = silence(T0, T0 + HOUR);
        let now = T0 + MIN;
        let mut p = post(T0, T0 + HOUR);
        p.matchers.push(am("job", "etcd", false, true));
        let v = validate(&p, now).expect("valid");
        assert!(matches!(
            update(&s, v, now),
            Update::Replace {
                expired: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn update_pending() {
        let s = silence(T0, T0 + HOUR);
        let now = T0 - HOUR;
        match update(&s, repost(&s, T0 + MIN, T0 + HOUR, now), now) {
            Update::InPlace(u) => assert_eq!(u.starts_at_ms, T0 + MIN),
            other => panic!("{other:?}"),
        }
        match update(&s, repost(&s, now - MIN, T0 + HOUR, now), now) {
            Update::Replace {
                expired: Some(old), ..
            } => assert_eq!((old.starts_at_ms, old.ends_at_ms), (now, now)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn update_expired_replaces_without_expiring() {
        let s = silence(T0, T0 + HOUR);
        let now = T0 + 2 * HOUR;
        let v = repost(&s, T0, T0 + 3 * HOUR, now);
        assert_eq!(
            update(&s, v.clone(), now),
            Update::Replace {
                expired: None,
                new: v
            }
        );
    }

    #[test]
    fn gettable_json() {
        let mut p = post(T0, T0 + HOUR);
        p.matchers.push(am("instance", "10\\.0\\..*", true, false));
        let v = validate(&p, T0).expect("valid");
        let mut s = Silence::create(v, 0xabcdef, T0);
        s.updated_at_ms = T0 + 123;
        let json = serde_json::to_value(s.to_gettable(T0 + MIN)).expect("json");
        let expected = serde_json::json!({
            "id": "00000000-0000-4000-8000-000000abcdef",
            "status": {"state": "active"},
            "updatedAt": "2027-01-15T08:00:00.123Z",
            "matchers": [
                {"name": "alertname", "value": "EtcdNoLeader", "isRegex": false, "isEqual": true},
                {"name": "instance", "value": "10\\.0\\..*", "isRegex": true, "isEqual": false}
            ],
            "startsAt": "2027-01-15T08:00:00.000Z",
            "endsAt": "2027-01-15T09:00:00.000Z",
            "createdBy": "ops",
            "comment": "maintenance"
        });
        assert_eq!(json, expected);
        let pending = serde_json::to_value(s.to_gettable(T0 - 1)).expect("json");
        assert_eq!(pending["status"], serde_json::json!({"state": "pending"}));
        let expired = serde_json::to_value(s.to_gettable(T0 + HOUR)).expect("json");
        assert_eq!(expired["status"], serde_json::json!({"state": "expired"}));
        let back: GettableSilence = serde_json::from_value(expected).expect("reads back");
        assert_eq!(back, s.to_gettable(T0 + MIN));
    }

    #[test]
    fn storage_round_trip() {
        let mut p = post(T0, T0 + HOUR);
        p.matchers.push(am("a", "x|y", true, true));
        let s = Silence::create(validate(&p, T0).expect("valid"), 3, T0);
        let text = serde_json::to_string(&s).expect("json");
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["v"], 1);
        assert_eq!(value["starts_at_ms"], T0);
        assert_eq!(
            value["matchers"][1],
            serde_json::json!({"name": "a", "value": "x|y", "isRegex": true, "isEqual": true})
        );
        let back: Silence = serde_json::from_str(&text).expect("reads back");
        assert_eq!(back, s);
        assert!(back.matches(&labels(&[("alertname", "EtcdNoLeader"), ("a", "y")])));
        assert!(!back.matches(&labels(&[("alertname", "EtcdNoLeader"), ("a", "xy")])));

        let bad = text.replace("x|y", "(");
        let e = serde_json::from_str::<Silence>(&bad).expect_err("bad regex");
        assert!(e.to_string().contains("unclosed group"), "{e}");
    }
}
