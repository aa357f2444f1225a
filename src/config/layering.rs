//! How two layers of settings merge: a higher layer's set values win, field by field.
//!
//! `layered_settings!` declares a settings struct and, from the same field list, its merge, so a new setting is
//! one field and never a forgotten merge line.

/// A layer of settings that can be laid over a lower one.
pub(super) trait Layer {
    /// `self` over `under`: what `self` sets wins, the rest comes from `under`.
    fn over(self, under: Self) -> Self;
}

impl<T> Layer for Option<T> {
    fn over(self, under: Self) -> Self {
        self.or(under)
    }
}

/// A list is set as a whole: a non-empty upper list replaces the lower one instead of adding to it.
impl<T> Layer for Vec<T> {
    fn over(self, under: Self) -> Self {
        if self.is_empty() { under } else { self }
    }
}

/// Declares a struct of settings, attributes and all, and implements `Layer` for it from the same fields.
macro_rules! layered_settings {
    (
        $(#[$($attr:tt)*])*
        $vis:vis struct $name:ident {
            $( $(#[$($field_attr:tt)*])* $field_vis:vis $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[$($attr)*])*
        $vis struct $name {
            $( $(#[$($field_attr)*])* $field_vis $field: $ty, )*
        }

        impl $crate::config::layering::Layer for $name {
            fn over(self, under: Self) -> Self {
                $name { $( $field: $crate::config::layering::Layer::over(self.$field, under.$field), )* }
            }
        }
    };
}
pub(super) use layered_settings;
