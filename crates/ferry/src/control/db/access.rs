//! What the proxy's credential check reads: each runtime's access token and the signing key of
//! the tokens platforms mint (one row of `settings`, shared by every instance on the database).

use super::*;

/// Name of the signing key's row in `settings`.
const SIGNING_KEY: &str = "proxy_signing_key";

impl Db {
    /// Gives every runtime without an access token one (runtimes that existed before the schema
    /// had tokens). Each row gets its own random token; a row that got one meanwhile keeps it.
    pub(super) async fn fill_access_tokens(&self) -> Result<()> {
        let ids: Vec<String> = sqlx::query("SELECT id FROM runtimes WHERE access_token IS NULL")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| text(r, "id"))
            .collect::<sqlx::Result<_>>()?;
        for id in ids {
            sqlx::query(
                "UPDATE runtimes SET access_token = $1 WHERE id = $2 AND access_token IS NULL",
            )
            .bind(crate::control::auth::new_token())
            .bind(&id)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Every runtime's access token, by runtime name.
    pub async fn access_tokens(&self) -> Result<Vec<(String, String)>> {
        sqlx::query("SELECT name, access_token FROM runtimes WHERE access_token IS NOT NULL")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((text(r, "name")?, text(r, "access_token")?)))
            .collect::<sqlx::Result<_>>()
            .map_err(Error::from)
    }

    /// The access token of runtime `name`, if it exists.
    pub async fn access_token(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT access_token FROM runtimes WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| opt(&r, "access_token")).transpose()?.flatten())
    }

    /// Gives runtime `name` a new access token (the old one stops working); returns it.
    pub async fn rotate_access_token(&self, name: &str) -> Result<String> {
        let token = crate::control::auth::new_token();
        let n = sqlx::query("UPDATE runtimes SET access_token = $1 WHERE name = $2")
            .bind(&token)
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(Error::NotFound(format!(
                "no runtime named {name:?}: see `ferry ls`"
            )));
        }
        Ok(token)
    }

    /// The key signed access tokens are made with (32 random bytes, hex): made by the first
    /// instance that needs it, then the same for all.
    pub async fn signing_key(&self) -> Result<String> {
        let fresh = format!(
            "{}{}",
            crate::control::auth::new_token(),
            crate::control::auth::new_token()
        );
        sqlx::query(
            "INSERT INTO settings (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(SIGNING_KEY)
        .bind(&fresh)
        .bind(now())
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(SIGNING_KEY)
            .fetch_one(&self.pool)
            .await?;
        Ok(text(&row, "value")?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::fresh;
    use super::*;

    #[tokio::test]
    async fn tokens_are_per_runtime_rotate_and_the_key_is_made_once() {
        let t = tempfile::tempdir().unwrap();
        let url = fresh(&t).await;
        let db = Db::open(&url.url).await.unwrap();
        let mut a = super::super::tests::row("a", "alpha", 0);
        db.insert_runtime_new_slot(&mut a, None).await.unwrap();
        let mut b = super::super::tests::row("b", "beta", 0);
        db.insert_runtime_new_slot(&mut b, None).await.unwrap();
        let ta = db.access_token("alpha").await.unwrap().unwrap();
        let tb = db.access_token("beta").await.unwrap().unwrap();
        assert_ne!(ta, tb, "each runtime has its own token");
        assert_eq!(ta.len(), 32, "128 bits, hex");
        let ra = db.rotate_access_token("alpha").await.unwrap();
        assert_ne!(ra, ta);
        assert_eq!(db.access_token("alpha").await.unwrap().unwrap(), ra);
        assert!(db.rotate_access_token("nobody").await.is_err());
        assert_eq!(db.access_tokens().await.unwrap().len(), 2);
        let k = db.signing_key().await.unwrap();
        assert_eq!(k.len(), 64);
        assert_eq!(db.signing_key().await.unwrap(), k, "made once");
        drop(db);
        // Runtimes made before tokens existed get one when the database is opened.
        let db = Db::open(&url.url).await.unwrap();
        sqlx::query("UPDATE runtimes SET access_token = NULL WHERE name = 'beta'")
            .execute(&db.pool)
            .await
            .unwrap();
        db.fill_access_tokens().await.unwrap();
        let nb = db.access_token("beta").await.unwrap().unwrap();
        assert!(nb.len() == 32 && nb != tb);
        assert_eq!(
            db.signing_key().await.unwrap(),
            k,
            "the key survives a reopen"
        );
    }
}
