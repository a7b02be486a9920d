//! Row types read by column name, without sqlx's `derive` feature: its proc-macro crate builds
//! both database drivers a second time, for one `FromRow` impl per row type.

/// Declares a struct and implements `sqlx::FromRow` for it on every back end, each field read
/// from the column of its name (as `#[derive(sqlx::FromRow)]` would).
macro_rules! row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($(#[$field_meta:meta])* $field_vis:vis $field:ident : $ty:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$field_meta])* $field_vis $field: $ty),*
        }

        impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for $name
        where
            &'r str: sqlx::ColumnIndex<R>,
            $($ty: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,)*
        {
            fn from_row(row: &'r R) -> sqlx::Result<Self> {
                Ok(Self {
                    $($field: sqlx::Row::try_get(row, stringify!($field))?),*
                })
            }
        }
    };
}
pub(crate) use row;
