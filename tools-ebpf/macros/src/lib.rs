//! Attributes for the kernel programs of `tools-ebpf`.
//!
//! User space finds programs and maps by name (`tools_common::<tool>::programs`,
//! `maps`, `tools_common::map_names`); these attributes make the compiler
//! check that a kernel-side item carries the name user space knows it by,
//! so a rename on either side fails the build instead of a load.

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, Expr, Item};

/// `#[named(programs::RAW_WAKEUP)]` on a program function or a map static:
/// the item is kept as it is, and the build fails unless its identifier is
/// the constant's value. Put it above aya's own attribute (`#[kprobe]`,
/// `#[map]`, ...).
#[proc_macro_attribute]
pub fn named(name: TokenStream, item: TokenStream) -> TokenStream {
    let name = parse_macro_input!(name as Expr);
    let parsed = parse_macro_input!(item as Item);
    let ident = match &parsed {
        Item::Fn(function) => &function.sig.ident,
        Item::Static(statik) => &statik.ident,
        other => {
            return syn::Error::new_spanned(other, "#[named] goes on a program function or a map static")
                .to_compile_error()
                .into()
        }
    };
    let message = format!("`{ident}` is not the name its constant gives: rename one of the two");
    quote! {
        #parsed
        const _: () = assert!(::tools_ebpf::is_named(stringify!(#ident), #name), #message);
    }
    .into()
}

/// `#[config]` on `static CONFIG: tools_ebpf::maps::Configuration<T>`: the tool's
/// configuration, which user space writes before the programs load. In the
/// modern build it is a read-only global (`.rodata`, Linux 5.2+) that the
/// loader rewrites; in the legacy build (feature `legacy`) a one-entry
/// array map, which user space fills before attaching.
#[proc_macro_attribute]
pub fn config(args: TokenStream, item: TokenStream) -> TokenStream {
    if !args.is_empty() {
        return syn::Error::new(proc_macro2::Span::call_site(), "#[config] takes no arguments")
            .to_compile_error()
            .into();
    }
    let statik = parse_macro_input!(item as syn::ItemStatic);
    if statik.ident != "CONFIG" {
        // The loader finds it by this name, in either build.
        return syn::Error::new_spanned(&statik.ident, "the configuration is named CONFIG").to_compile_error().into();
    }
    quote! {
        #[cfg_attr(feature = "legacy", ::aya_ebpf::macros::map)]
        #[cfg_attr(not(feature = "legacy"), unsafe(no_mangle))]
        #statik
    }
    .into()
}
