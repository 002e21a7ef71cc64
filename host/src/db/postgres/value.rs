//! PostgreSQL's types as guests' values, both ways, so a guest sees the
//! same shapes on either backend:
//!
//! | PostgreSQL | guest value |
//! | --- | --- |
//! | `boolean` | integer 0 or 1 |
//! | `smallint`, `integer`, `bigint`, `oid` | integer |
//! | `real`, `double precision` | real |
//! | `numeric` | integer when whole and in range, else real (as SQLite stores decimals) |
//! | `text`, `varchar`, `char(n)`, `name`, `json`, `jsonb`, enums | text |
//! | `uuid` | text, 32 lowercase hex digits (Django's SQLite form) |
//! | `timestamp with time zone`, `timestamp` | text, `YYYY-MM-DD HH:MM:SS.ffffff` in UTC (Django's SQLite form) |
//! | `date`, `time` | text, `YYYY-MM-DD`, `HH:MM:SS.ffffff` |
//! | `bytea` | blob |
//!
//! Other types (arrays, intervals, ranges, network addresses...) are refused
//! with a message that says to cast the column to `text`. A parameter is
//! bound by the type PostgreSQL inferred for it: a text is parsed as a UUID
//! (any spelling) for a `uuid`, as a Django datetime for a timestamp (no
//! offset: UTC), an integer becomes a boolean, and so on.
//!
//! Everything is encoded and decoded here in PostgreSQL's binary format, so
//! the session's time zone and date style never change what a guest sees.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{FromSql, IsNull, Kind, ToSql, Type, to_sql_checked};

use crate::db::Value;

/// 2000-01-01 00:00:00 UTC, PostgreSQL's epoch, in Unix seconds.
const POSTGRES_EPOCH_SECS: i64 = 946_684_800;
/// Days from 1970-01-01 to 2000-01-01.
const POSTGRES_EPOCH_DAYS: i32 = 10_957;

/// A guest's value, checked and converted for one PostgreSQL type.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// NULL, of any type.
    Null,
    /// `boolean`
    Bool(bool),
    /// `smallint`
    Int2(i16),
    /// `integer`
    Int4(i32),
    /// `bigint`
    Int8(i64),
    /// `oid`
    Oid(u32),
    /// `real`
    Float4(f32),
    /// `double precision`
    Float8(f64),
    /// `numeric`, already in the binary format.
    Numeric(Vec<u8>),
    /// Text types, `json`, enum labels.
    Text(String),
    /// `jsonb`
    Jsonb(String),
    /// `bytea`
    Bytes(Vec<u8>),
    /// `uuid`
    Uuid([u8; 16]),
    /// `timestamp[tz]`: microseconds since 2000-01-01 UTC.
    Timestamp(i64),
    /// `date`: days since 2000-01-01.
    Date(i32),
    /// `time`: microseconds since midnight.
    Time(i64),
    /// `"char"`
    Char(i8),
}

impl Bound {
    /// Now, for a `timestamp[tz]` column the host fills.
    pub fn now() -> Self {
        Bound::Timestamp(unix_micros_to_postgres(
            chrono::Utc::now().timestamp_micros(),
        ))
    }

    /// The text length (or bytes) for `varchar(n)` and `max_value_bytes` checks.
    fn size(&self) -> usize {
        match self {
            Bound::Text(text) | Bound::Jsonb(text) => text.len(),
            Bound::Bytes(bytes) => bytes.len(),
            _ => 0,
        }
    }

    /// Characters, for `varchar(n)`.
    pub fn chars(&self) -> Option<usize> {
        match self {
            Bound::Text(text) => Some(text.chars().count()),
            _ => None,
        }
    }
}

fn unix_micros_to_postgres(micros: i64) -> i64 {
    micros - POSTGRES_EPOCH_SECS * 1_000_000
}

/// Whether `ty` (or the type of a domain over it) is a text type for binding.
fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
            | Type::UNKNOWN
            | Type::JSON
            | Type::XML
    ) || matches!(ty.kind(), Kind::Enum(_))
        || ty.name() == "citext"
}

/// Converts a guest's value for a parameter or column of type `ty`; the
/// error says why it cannot be (never echoing the value).
pub fn bind(value: &Value, ty: &Type, max_value_bytes: usize) -> Result<Bound, String> {
    let bound = convert(value, ty)?;
    if bound.size() > max_value_bytes {
        return Err(format!(
            "a value of {} bytes exceeds [database] max_value_bytes ({max_value_bytes})",
            bound.size()
        ));
    }
    Ok(bound)
}

fn convert(value: &Value, ty: &Type) -> Result<Bound, String> {
    if *value == Value::Null {
        return Ok(Bound::Null);
    }
    if let Kind::Domain(inner) = ty.kind() {
        return convert(value, inner);
    }
    let wrong = || {
        format!(
            "a {} cannot be bound to a parameter or column of type {}",
            kind_of(value),
            ty.name()
        )
    };
    let whole = |value: &Value| -> Option<i64> {
        match value {
            Value::Integer(i) => Some(*i),
            Value::Real(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(*f as i64),
            Value::Text(text) => text.trim().parse().ok(),
            _ => None,
        }
    };
    let out_of_range = || format!("the value is out of range for type {}", ty.name());
    Ok(match *ty {
        Type::BOOL => Bound::Bool(match value {
            Value::Integer(i) => *i != 0,
            Value::Real(f) => *f != 0.0,
            Value::Text(text) => match text.trim().to_ascii_lowercase().as_str() {
                "t" | "true" | "y" | "yes" | "on" | "1" => true,
                "f" | "false" | "n" | "no" | "off" | "0" => false,
                _ => return Err("the text is not a boolean".into()),
            },
            Value::Blob(_) | Value::Null => return Err(wrong()),
        }),
        Type::INT2 => Bound::Int2(
            whole(value)
                .ok_or_else(wrong)?
                .try_into()
                .map_err(|_| out_of_range())?,
        ),
        Type::INT4 => Bound::Int4(
            whole(value)
                .ok_or_else(wrong)?
                .try_into()
                .map_err(|_| out_of_range())?,
        ),
        Type::INT8 => Bound::Int8(whole(value).ok_or_else(wrong)?),
        Type::OID => Bound::Oid(
            whole(value)
                .ok_or_else(wrong)?
                .try_into()
                .map_err(|_| out_of_range())?,
        ),
        Type::FLOAT4 | Type::FLOAT8 => {
            let float = match value {
                Value::Integer(i) => *i as f64,
                Value::Real(f) => *f,
                Value::Text(text) => text.trim().parse().map_err(|_| wrong())?,
                _ => return Err(wrong()),
            };
            if *ty == Type::FLOAT4 {
                Bound::Float4(float as f32)
            } else {
                Bound::Float8(float)
            }
        }
        Type::NUMERIC => Bound::Numeric(
            match value {
                Value::Integer(i) => encode_numeric(&i.to_string()),
                Value::Real(f) if f.is_finite() => encode_numeric(&f.to_string()),
                Value::Text(text) => encode_numeric(text.trim()),
                _ => None,
            }
            .ok_or_else(wrong)?,
        ),
        Type::UUID => Bound::Uuid(match value {
            Value::Text(text) => *uuid::Uuid::try_parse(text.trim())
                .map_err(|_| "the text is not a UUID".to_string())?
                .as_bytes(),
            Value::Blob(bytes) => bytes
                .as_slice()
                .try_into()
                .map_err(|_| "a UUID blob has 16 bytes".to_string())?,
            _ => return Err(wrong()),
        }),
        Type::TIMESTAMPTZ | Type::TIMESTAMP => match value {
            Value::Text(text) => Bound::Timestamp(unix_micros_to_postgres(
                parse_datetime(text).ok_or_else(|| {
                    "the text is not a datetime (write YYYY-MM-DD HH:MM:SS[.ffffff][+HH:MM]; \
                     without an offset it is UTC)"
                        .to_string()
                })?,
            )),
            _ => return Err(wrong()),
        },
        Type::DATE => match value {
            Value::Text(text) => {
                let date = chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                    .map_err(|_| "the text is not a date (YYYY-MM-DD)".to_string())?;
                let days = date
                    .signed_duration_since(chrono::NaiveDate::default())
                    .num_days();
                Bound::Date(i32::try_from(days).map_err(|_| out_of_range())? - POSTGRES_EPOCH_DAYS)
            }
            _ => return Err(wrong()),
        },
        Type::TIME => match value {
            Value::Text(text) => {
                let time = chrono::NaiveTime::parse_from_str(text.trim(), "%H:%M:%S%.f")
                    .map_err(|_| "the text is not a time (HH:MM:SS[.ffffff])".to_string())?;
                Bound::Time(
                    time.signed_duration_since(chrono::NaiveTime::MIN)
                        .num_microseconds()
                        .unwrap_or(0),
                )
            }
            _ => return Err(wrong()),
        },
        Type::JSONB => Bound::Jsonb(match value {
            Value::Text(text) => text.clone(),
            Value::Integer(i) => i.to_string(),
            Value::Real(f) => f.to_string(),
            _ => return Err(wrong()),
        }),
        Type::BYTEA => Bound::Bytes(match value {
            Value::Blob(bytes) => bytes.clone(),
            Value::Text(text) => text.as_bytes().to_vec(),
            _ => return Err(wrong()),
        }),
        Type::CHAR => match value {
            Value::Text(text) if text.len() == 1 => Bound::Char(text.as_bytes()[0] as i8),
            _ => return Err(wrong()),
        },
        _ if is_text(ty) => Bound::Text(match value {
            Value::Text(text) => text.clone(),
            Value::Integer(i) => i.to_string(),
            Value::Real(f) => f.to_string(),
            Value::Blob(bytes) => String::from_utf8(bytes.clone()).map_err(|_| wrong())?,
            Value::Null => unreachable!("handled above"),
        }),
        _ => {
            return Err(format!(
                "type {} cannot take a guest's value; cast the parameter (e.g. `?1::text`)",
                ty.name()
            ));
        }
    })
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Integer(_) => "integer",
        Value::Real(_) => "real",
        Value::Text(_) => "text",
        Value::Blob(_) => "blob",
    }
}

/// Microseconds since the Unix epoch of a datetime in Django's text forms:
/// `YYYY-MM-DD HH:MM[:SS[.ffffff]]` or with `T`, with an optional offset or
/// `Z` (without one: UTC), or a date alone (midnight UTC).
pub fn parse_datetime(text: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    let text = text.trim();
    if let Ok(datetime) = DateTime::parse_from_rfc3339(text) {
        return Some(datetime.timestamp_micros());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(datetime) = DateTime::parse_from_str(text, format) {
            return Some(datetime.timestamp_micros());
        }
    }
    let naive = text.strip_suffix('Z').unwrap_or(text);
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(datetime) = NaiveDateTime::parse_from_str(naive, format) {
            return Some(datetime.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(naive, "%Y-%m-%d")
        .ok()
        .map(|date| {
            date.and_time(chrono::NaiveTime::MIN)
                .and_utc()
                .timestamp_micros()
        })
}

/// Django's text form of a datetime in UTC: `YYYY-MM-DD HH:MM:SS.ffffff`.
pub fn format_datetime(unix_micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(unix_micros)
        .map(|datetime| datetime.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
        .unwrap_or_else(|| "invalid".into())
}

/// PostgreSQL's binary `numeric` from decimal text (`-12.3400`), or `None`
/// when it is not one.
pub fn encode_numeric(text: &str) -> Option<Vec<u8>> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let scale = u16::try_from(fraction.len()).ok()?;
    // Base-10000 digits: the whole part padded on the left, the fraction on
    // the right, to multiples of four decimal digits.
    let pad_left = (4 - whole.len() % 4) % 4;
    let pad_right = (4 - fraction.len() % 4) % 4;
    let padded: Vec<u8> = std::iter::repeat_n(b'0', pad_left)
        .chain(whole.bytes())
        .chain(fraction.bytes())
        .chain(std::iter::repeat_n(b'0', pad_right))
        .collect();
    let mut groups: Vec<i16> = padded
        .chunks(4)
        .map(|chunk| {
            chunk
                .iter()
                .fold(0i16, |acc, digit| acc * 10 + i16::from(digit - b'0'))
        })
        .collect();
    let mut weight = i16::try_from((whole.len() + pad_left) / 4).ok()? - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    let mut out = Vec::with_capacity(8 + 2 * groups.len());
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&(if groups.is_empty() { 0 } else { weight }).to_be_bytes());
    let sign: u16 = if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    };
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&scale.to_be_bytes());
    for group in groups {
        out.extend_from_slice(&group.to_be_bytes());
    }
    Some(out)
}

/// Decimal text of a binary `numeric` (`NaN` and the infinities spelled so).
fn decode_numeric(raw: &[u8]) -> Result<String, String> {
    let word = |at: usize| -> Result<u16, String> {
        raw.get(at..at + 2)
            .map(|bytes| u16::from_be_bytes([bytes[0], bytes[1]]))
            .ok_or_else(|| "a truncated numeric".to_string())
    };
    let count = word(0)? as usize;
    let weight = word(2)? as i16 as i32;
    let sign = word(4)?;
    let scale = word(6)? as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let groups: Vec<u16> = (0..count)
        .map(|n| word(8 + 2 * n))
        .collect::<Result<_, _>>()?;
    let mut whole = String::new();
    let mut fraction = String::new();
    for power in (0..=weight.max(0)).rev() {
        let index = weight - power;
        let group = if index >= 0 {
            groups.get(index as usize).copied().unwrap_or(0)
        } else {
            0
        };
        if whole.is_empty() {
            if group != 0 || power == 0 {
                whole = group.to_string();
            }
        } else {
            whole.push_str(&format!("{group:04}"));
        }
    }
    let mut index = weight + 1;
    while fraction.len() < scale {
        let group = if index >= 0 {
            groups.get(index as usize).copied().unwrap_or(0)
        } else {
            0
        };
        fraction.push_str(&format!("{group:04}"));
        index += 1;
    }
    fraction.truncate(scale);
    let sign = if sign == 0x4000 { "-" } else { "" };
    Ok(if fraction.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    })
}

impl ToSql for Bound {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Bound::Null => return Ok(IsNull::Yes),
            Bound::Bool(b) => out.put_u8(u8::from(*b)),
            Bound::Int2(i) => out.put_i16(*i),
            Bound::Int4(i) => out.put_i32(*i),
            Bound::Int8(i) => out.put_i64(*i),
            Bound::Oid(i) => out.put_u32(*i),
            Bound::Float4(f) => out.put_f32(*f),
            Bound::Float8(f) => out.put_f64(*f),
            Bound::Numeric(bytes) | Bound::Bytes(bytes) => out.put_slice(bytes),
            Bound::Text(text) => out.put_slice(text.as_bytes()),
            Bound::Jsonb(text) => {
                out.put_u8(1);
                out.put_slice(text.as_bytes());
            }
            Bound::Uuid(bytes) => out.put_slice(bytes),
            Bound::Timestamp(micros) | Bound::Time(micros) => out.put_i64(*micros),
            Bound::Date(days) => out.put_i32(*days),
            Bound::Char(c) => out.put_i8(*c),
        }
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        // Values are bound for the type PostgreSQL asked for (see `bind`).
        true
    }

    to_sql_checked!();
}

/// A one-dimensional array of bound values, for `= ANY($1)`.
#[derive(Debug)]
pub struct BoundArray(pub Vec<Bound>);

impl ToSql for BoundArray {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let Kind::Array(element) = ty.kind() else {
            return Err(format!("{} is not an array type", ty.name()).into());
        };
        let has_null = self.0.contains(&Bound::Null);
        out.put_i32(1);
        out.put_i32(i32::from(has_null));
        out.put_u32(element.oid());
        out.put_i32(i32::try_from(self.0.len())?);
        out.put_i32(1);
        for value in &self.0 {
            let at = out.len();
            out.put_i32(0);
            match value.to_sql(element, out)? {
                IsNull::Yes => out[at..at + 4].copy_from_slice(&(-1i32).to_be_bytes()),
                IsNull::No => {
                    let length = i32::try_from(out.len() - at - 4)?;
                    out[at..at + 4].copy_from_slice(&length.to_be_bytes());
                }
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(ty.kind(), Kind::Array(_))
    }

    to_sql_checked!();
}

/// Whether a column of type `ty` can be returned to a guest.
pub fn readable(ty: &Type) -> bool {
    match ty.kind() {
        Kind::Domain(inner) => readable(inner),
        Kind::Enum(_) => true,
        _ => {
            is_text(ty)
                || matches!(
                    *ty,
                    Type::BOOL
                        | Type::INT2
                        | Type::INT4
                        | Type::INT8
                        | Type::OID
                        | Type::FLOAT4
                        | Type::FLOAT8
                        | Type::NUMERIC
                        | Type::JSONB
                        | Type::UUID
                        | Type::TIMESTAMPTZ
                        | Type::TIMESTAMP
                        | Type::DATE
                        | Type::TIME
                        | Type::BYTEA
                        | Type::CHAR
                )
        }
    }
}

/// One column of a result row, as a guest's value.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell(pub Value);

fn read_i64(raw: &[u8]) -> Result<i64, Box<dyn Error + Sync + Send>> {
    Ok(i64::from_be_bytes(raw.try_into()?))
}

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        if let Kind::Domain(inner) = ty.kind() {
            return Cell::from_sql(inner, raw);
        }
        let text = || -> Result<String, Box<dyn Error + Sync + Send>> {
            Ok(std::str::from_utf8(raw)?.to_string())
        };
        Ok(Cell(match *ty {
            Type::BOOL => Value::Integer(i64::from(raw.first().copied().unwrap_or(0) != 0)),
            Type::INT2 => Value::Integer(i64::from(i16::from_be_bytes(raw.try_into()?))),
            Type::INT4 => Value::Integer(i64::from(i32::from_be_bytes(raw.try_into()?))),
            Type::OID => Value::Integer(i64::from(u32::from_be_bytes(raw.try_into()?))),
            Type::INT8 => Value::Integer(read_i64(raw)?),
            Type::FLOAT4 => Value::Real(f64::from(f32::from_be_bytes(raw.try_into()?))),
            Type::FLOAT8 => Value::Real(f64::from_be_bytes(raw.try_into()?)),
            Type::NUMERIC => {
                let decimal = decode_numeric(raw)?;
                match decimal.parse::<i64>() {
                    Ok(whole) => Value::Integer(whole),
                    Err(_) => Value::Real(decimal.parse().unwrap_or(f64::NAN)),
                }
            }
            Type::JSONB => {
                Value::Text(std::str::from_utf8(raw.get(1..).unwrap_or_default())?.to_string())
            }
            Type::UUID => Value::Text(uuid::Uuid::from_slice(raw)?.simple().to_string()),
            Type::TIMESTAMPTZ | Type::TIMESTAMP => Value::Text(match read_i64(raw)? {
                i64::MAX => "infinity".into(),
                i64::MIN => "-infinity".into(),
                micros => format_datetime(micros + POSTGRES_EPOCH_SECS * 1_000_000),
            }),
            Type::DATE => {
                let days = i32::from_be_bytes(raw.try_into()?);
                Value::Text(
                    chrono::NaiveDate::default()
                        .checked_add_signed(chrono::TimeDelta::days(
                            i64::from(days) + i64::from(POSTGRES_EPOCH_DAYS),
                        ))
                        .map_or_else(
                            || "infinity".into(),
                            |date| date.format("%Y-%m-%d").to_string(),
                        ),
                )
            }
            Type::TIME => {
                let micros = read_i64(raw)?;
                Value::Text(
                    (chrono::NaiveTime::MIN + chrono::TimeDelta::microseconds(micros))
                        .format("%H:%M:%S%.6f")
                        .to_string(),
                )
            }
            Type::BYTEA => Value::Blob(raw.to_vec()),
            Type::CHAR => Value::Text(char::from(raw.first().copied().unwrap_or(0)).to_string()),
            _ if is_text(ty) => Value::Text(text()?),
            _ => {
                return Err(
                    format!("type {} cannot be returned; cast it to text", ty.name()).into(),
                );
            }
        }))
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Cell(Value::Null))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

/// A column's value in PostgreSQL's binary format, as is: for comparing
/// keys without decoding them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawValue(pub Option<Vec<u8>>);

impl<'a> FromSql<'a> for RawValue {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(RawValue(Some(raw.to_vec())))
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(RawValue(None))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

impl Bound {
    /// This value as PostgreSQL's binary format sends it back.
    pub fn raw(&self, ty: &Type) -> RawValue {
        let mut out = BytesMut::new();
        match self.to_sql(ty, &mut out) {
            Ok(IsNull::No) => RawValue(Some(out.to_vec())),
            _ => RawValue(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(value: Value, ty: Type) -> Value {
        let bound = bind(&value, &ty, 1 << 20).unwrap();
        let mut out = BytesMut::new();
        match bound.to_sql(&ty, &mut out).unwrap() {
            IsNull::Yes => Cell::from_sql_null(&ty).unwrap().0,
            IsNull::No => Cell::from_sql(&ty, &out).unwrap().0,
        }
    }

    #[test]
    fn guests_see_django_shapes() {
        let id = "c189712e-871d-45de-8f11-1a3b1de97c30";
        assert_eq!(
            round_trip(Value::Text(id.into()), Type::UUID),
            Value::Text("c189712e871d45de8f111a3b1de97c30".into())
        );
        assert_eq!(
            round_trip(
                Value::Text("2026-11-25 17:22:22.535044".into()),
                Type::TIMESTAMPTZ
            ),
            Value::Text("2026-11-25 17:22:22.535044".into())
        );
        assert_eq!(
            round_trip(
                Value::Text("2026-11-25T18:22:22.5+01:00".into()),
                Type::TIMESTAMPTZ
            ),
            Value::Text("2026-11-25 17:22:22.500000".into())
        );
        assert_eq!(
            round_trip(
                Value::Text("2026-11-25 17:22:22Z".into()),
                Type::TIMESTAMPTZ
            ),
            Value::Text("2026-11-25 17:22:22.000000".into())
        );
        assert_eq!(
            round_trip(Value::Text("1999-12-31".into()), Type::DATE),
            Value::Text("1999-12-31".into())
        );
        assert_eq!(round_trip(Value::Integer(1), Type::BOOL), Value::Integer(1));
        assert_eq!(round_trip(Value::Integer(7), Type::INT2), Value::Integer(7));
        assert_eq!(round_trip(Value::Null, Type::UUID), Value::Null);
        assert_eq!(round_trip(Value::Real(2.5), Type::FLOAT8), Value::Real(2.5));
        assert_eq!(
            round_trip(Value::Text("{\"a\": 1}".into()), Type::JSONB),
            Value::Text("{\"a\": 1}".into())
        );
        assert_eq!(
            round_trip(Value::Blob(vec![0, 1]), Type::BYTEA),
            Value::Blob(vec![0, 1])
        );
    }

    #[test]
    fn numerics_are_exact_where_they_can_be() {
        for (text, value) in [
            ("0", Value::Integer(0)),
            ("-12", Value::Integer(-12)),
            ("10000", Value::Integer(10000)),
            ("123456789012", Value::Integer(123_456_789_012)),
            ("12.50", Value::Real(12.5)),
            ("-0.0001", Value::Real(-0.0001)),
            ("0.00012345", Value::Real(0.00012345)),
        ] {
            assert_eq!(
                round_trip(Value::Text(text.into()), Type::NUMERIC),
                value,
                "{text}"
            );
        }
        assert_eq!(
            decode_numeric(&encode_numeric("-1234.5600").unwrap()).unwrap(),
            "-1234.5600"
        );
        assert_eq!(
            decode_numeric(&encode_numeric("00.1").unwrap()).unwrap(),
            "0.1"
        );
        assert!(encode_numeric("1e5").is_none());
        assert!(encode_numeric("").is_none());
    }

    #[test]
    fn wrong_values_say_why_without_echoing_them() {
        let err = bind(&Value::Text("not-a-secret-uuid".into()), &Type::UUID, 100).unwrap_err();
        assert_eq!(err, "the text is not a UUID");
        let err = bind(&Value::Integer(70_000), &Type::INT2, 100).unwrap_err();
        assert!(err.contains("out of range"), "{err}");
        let err = bind(&Value::Text("x".repeat(101)), &Type::TEXT, 100).unwrap_err();
        assert!(err.contains("max_value_bytes"), "{err}");
        let err = bind(&Value::Text("[1,2)".into()), &Type::INT4_RANGE, 100).unwrap_err();
        assert!(err.contains("cast the parameter"), "{err}");
        assert!(!readable(&Type::INTERVAL));
        assert!(readable(&Type::TIMESTAMPTZ));
    }

    #[test]
    fn arrays_encode_for_any() {
        let array = BoundArray(vec![Bound::Int4(1), Bound::Null]);
        let mut out = BytesMut::new();
        array.to_sql(&Type::INT4_ARRAY, &mut out).unwrap();
        assert_eq!(
            out.as_ref(),
            [
                0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 23, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0,
                1, 255, 255, 255, 255
            ]
        );
    }
}
