//! The router: any pattern text compiles or is refused with a reason, and
//! any path is matched or not, in time linear in its length.
#![no_main]

use consumer_host::routing::Route;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (pattern, path) = input;
    for pattern in [pattern, "ws/<room_name>/", "r/<a>-<int:b>/<path:rest>"] {
        if let Ok(route) = Route::parse(pattern, "c") {
            if let Some(found) = route.matches(path) {
                // Every capture is a piece of the path.
                for (_, value) in &found.kwargs {
                    assert!(path.contains(value.as_str()));
                }
            }
        }
    }
});
