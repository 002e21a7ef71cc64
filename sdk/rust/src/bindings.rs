//! The consumer world 0.2.0, generated from the repository's `wit/`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "consumer",
    pub_export_macro: true,
    export_macro_name: "__export_consumer",
    default_bindings_module: "consumer_host_sdk::bindings",
    additional_derives: [PartialEq],
});
