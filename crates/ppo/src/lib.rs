//! ppo
