//! Deterministic generation of a realistic company from a seed.

use super::SimUser;
use chrono::{Duration, NaiveDate, NaiveDateTime};

const FIRST: &[&str] = &[
    "james",
    "mary",
    "robert",
    "patricia",
    "john",
    "jennifer",
    "michael",
    "linda",
    "david",
    "elizabeth",
    "william",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "charles",
    "karen",
    "chris",
    "lisa",
    "daniel",
    "nancy",
    "matthew",
    "betty",
    "anthony",
    "sandra",
    "mark",
    "ashley",
    "amina",
    "wei",
    "sofia",
    "lucas",
    "chloe",
    "noah",
    "emma",
    "yuki",
    "priya",
    "omar",
];

const LAST: &[&str] = &[
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "nguyen",
    "kim",
    "patel",
    "mueller",
    "rossi",
    "dubois",
    "tanaka",
    "okafor",
    "silva",
    "novak",
];

/// Group names used for seeded users.
pub const GROUPS: &[&str] = &[
    "Engineering",
    "Sales",
    "Finance",
    "Support",
    "Integration Development",
];

/// The first uid handed out.
pub const FIRST_UID: u64 = 449_022_543;

/// The format LastPass uses for dates (UTC assumed).
pub const DATE_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn start() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2019, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default()
}

/// `count` users with monotonic uids from `FIRST_UID`: ~5% admins (active), ~70% active,
/// ~10% disabled, ~15% never logged in; ~30% in one or two groups. Returns the users and the
/// next free uid.
pub fn generate(count: usize, seed: u64) -> (Vec<SimUser>, u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut uid = FIRST_UID;
    let mut users = Vec::with_capacity(count);
    let created_span_secs: i64 = 6 * 365 * 24 * 3600; // 2019..2025
    for i in 0..count {
        let first = FIRST[rng.usize(..FIRST.len())];
        let last = LAST[rng.usize(..LAST.len())];
        let roll = rng.u32(0..100);
        let (admin, disabled, never) = match roll {
            0..5 => (true, false, false),
            5..15 => (false, true, false),
            15..30 => (false, false, true),
            _ => (false, false, false),
        };
        let created = start() + Duration::seconds(rng.i64(0..created_span_secs));
        let last_login = if never {
            String::new()
        } else {
            let after = Duration::seconds(rng.i64(3600..400 * 24 * 3600));
            (created + after).format(DATE_FORMAT).to_string()
        };
        let mut groups = Vec::new();
        if rng.u32(0..100) < 30 {
            groups.push(GROUPS[rng.usize(..GROUPS.len())].to_string());
            if rng.u32(0..100) < 25 {
                let g = GROUPS[rng.usize(..GROUPS.len())].to_string();
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
        }
        users.push(SimUser {
            uid: uid.to_string(),
            username: format!("{first}.{last}{i}@example.com"),
            fullname: format!("{} {}", capitalize(first), capitalize(last)),
            disabled,
            admin,
            neverloggedin: never,
            last_login,
            created: created.format(DATE_FORMAT).to_string(),
            groups,
            password_reset_required: never,
        });
        uid += rng.u64(1..=97);
    }
    (users, uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_realistic() {
        let (a, next) = generate(2000, 7);
        let (b, _) = generate(2000, 7);
        assert_eq!(a, b);
        assert!(next > a.last().map(|u| u.uid.parse::<u64>().unwrap()).unwrap());
        let share =
            |f: &dyn Fn(&SimUser) -> bool| a.iter().filter(|u| f(u)).count() * 100 / a.len();
        assert!((60..80).contains(&share(&|u| !u.disabled && !u.neverloggedin)));
        assert!((5..15).contains(&share(&|u| u.disabled)));
        assert!((10..20).contains(&share(&|u| u.neverloggedin)));
        assert!((2..8).contains(&share(&|u| u.admin)));
        assert!((20..40).contains(&share(&|u| !u.groups.is_empty())));
        assert!(a.iter().all(|u| u.neverloggedin == u.last_login.is_empty()));
        let mut names: Vec<_> = a.iter().map(|u| u.username.clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), a.len());
    }
}
