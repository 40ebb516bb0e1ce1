#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wechat_oauth_fuzz::canonical_path(data));
