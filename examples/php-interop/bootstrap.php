<?php
/**
 * Loads Predis and the store, and connects: shared by cli.php and index.php.
 *
 * Environment: REDIS_URL (default redis://127.0.0.1:6379), SESSION_PREFIX (default
 * `session:`), ABSOLUTE_LIFETIME (the Rust layer's absolute lifetime in seconds, default
 * 43200; `none` if it has none), PREDIS_AUTOLOADER (path to Predis's Autoloader.php or a
 * Composer vendor/autoload.php; default: Debian's php-nrk-predis, then ./vendor).
 */

declare(strict_types=1);

require __DIR__ . '/SessionStore.php';

/** Loads Predis; false if it cannot be found. */
function load_predis(): bool
{
    $candidates = array_filter([
        getenv('PREDIS_AUTOLOADER') ?: null,
        stream_resolve_include_path('Predis/Autoloader.php') ?: null, // Debian: /usr/share/php
        __DIR__ . '/vendor/autoload.php', // composer require predis/predis
    ]);
    foreach ($candidates as $file) {
        if (is_file($file)) {
            require_once $file;
            if (class_exists('Predis\Autoloader')) {
                \Predis\Autoloader::register();
            }
            return class_exists('Predis\Client');
        }
    }
    return false;
}

function session_store(): RedisSessionStore
{
    $lifetime = getenv('ABSOLUTE_LIFETIME');
    $redis = new \Predis\Client(getenv('REDIS_URL') ?: 'redis://127.0.0.1:6379');
    return new RedisSessionStore(
        $redis,
        getenv('SESSION_PREFIX') ?: 'session:',
        1800,
        $lifetime === 'none' ? null : (int) ($lifetime ?: 12 * 3600),
    );
}
