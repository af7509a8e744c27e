#!/usr/bin/perl

# Tests for ngx_http_api_sessions_module, blocking: api_sessions_denylist
# fetched by one worker at a time from nginx itself (a static file with its
# ETag), api_sessions_block on, off, dry_run and a custom status, keys from
# headers, cookies, request bodies and a login response's token, expiry,
# unblocking, a source that is down or sends a malformed document, reload,
# and the counters.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;
use Test::ApiSessions;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http proxy api_sessions/)->plan(38);

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 2;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_secret secret;
    api_sessions_export file=%%TESTDIR%%/api_sessions.ndjson flush=100ms;
    api_sessions_denylist zone=deny:1m interval=1s
                          url=http://127.0.0.1:%%PORT_8081%%/denylist
                          header=X-Token:fetcher;

    # the API behind, and the denylist document
    server {
        listen       127.0.0.1:%%PORT_8081%%;
        server_name  backend;

        default_type application/json;

        location = /denylist {
            if (-f %%TESTDIR%%/down) {
                return 503;
            }
            alias %%TESTDIR%%/denylist.json;
        }

        location /login {
            return 200 '{"user":"u","token":"$http_x_issue"}';
        }

        location / {
            return 200 '{"ok":true}';
        }
    }

    server {
        listen       127.0.0.1:%%PORT_8080%%;
        server_name  localhost;

        api_sessions on;
        api_sessions_key response_body:/token name=token;
        api_sessions_key $http_x_token name=token;
        api_sessions_key $cookie_sid name=sid;
        api_sessions_key request_body:/user name=user;

        add_header X-Blocked $api_session_blocked always;

        location /on/ {
            api_sessions_block on;
            proxy_pass http://127.0.0.1:%%PORT_8081%%/;
        }

        location /dry/ {
            api_sessions_block dry_run;
            proxy_pass http://127.0.0.1:%%PORT_8081%%/;
        }

        location /custom/ {
            api_sessions_block on;
            api_sessions_block_status 429;
            proxy_pass http://127.0.0.1:%%PORT_8081%%/;
        }

        location /off/ {
            proxy_pass http://127.0.0.1:%%PORT_8081%%/;
        }

        location = /status {
            api_sessions off;
            api_sessions_status;
        }
    }
}

EOF

$t->write_file('secret', "0123456789abcdef0123456789abcdef\n");
$t->write_file('denylist.json', '{"version":0,"entries":[]}');
$t->run();

###############################################################################

# A static file's ETag is its modification time and size: every new document
# gets a later modification time.
my $mtime = time();

sub document {
	my ($text) = @_;
	$t->write_file('denylist.json', $text);
	$mtime += 10;
	utime($mtime, $mtime, $t->testdir() . '/denylist.json');
}

sub entry {
	my ($hash, $expires) = @_;
	$expires = defined $expires ? qq{"$expires"} : 'null';
	return qq{{"key_hash":"$hash","expires":$expires,"reason":"test"}};
}

sub publish {
	my ($version, @entries) = @_;
	document('{"version":' . $version . ',"entries":['
		. join(',', @entries) . ']}');
	wait_status('/status', sub { $_[0]{denylist_version} == $version });
}

sub rfc3339 {
	my @t = gmtime($_[0]);
	return sprintf('%04d-%02d-%02dT%02d:%02d:%02dZ',
		$t[5] + 1900, $t[4] + 1, @t[3, 2, 1, 0]);
}

sub answer {
	my ($r) = @_;
	return (http_status($r) // 0) . ' ' . (http_header($r, 'X-Blocked') // '-');
}

sub get {
	my ($uri, @headers) = @_;
	return answer(http("GET $uri HTTP/1.0\r\nHost: localhost\r\n"
		. join('', map { "$_\r\n" } @headers) . "\r\n"));
}

sub post {
	my ($uri, $json) = @_;
	return answer(http_post_json($uri, $json));
}

# the key hashes, as records carry them

get('/off/login', 'X-Issue: tok-login');
get('/off/cookie', 'Cookie: sid=cookie-1');
post('/off/body', '{"user":"body-1"}');
get('/off/ttl', 'X-Token: tok-ttl');

# two workers write records in their own order
my %first = map { $_->{path} => $_ } $t->wait_records(4);
is($first{'/off/login'}{session_key}, 'token',
	'login response resolves the token');

my %hash = map { $_ => $first{"/off/$_"}{key_hash} } qw/ cookie body ttl /;
$hash{token} = $first{'/off/login'}{key_hash};
is(scalar(grep { /^[0-9a-f]{32}$/ } values %hash), 4, 'key hashes');

my $ttl = time() + 4;
publish(1, entry($hash{token}), entry($hash{cookie}, '2099-01-01T00:00:00Z'),
	entry($hash{body}), entry($hash{ttl}, rfc3339($ttl)));

my $s = status_json('/status');
is($s->{denylist_entries}, 4, 'entries');

# block on: the login's token sent back in a header, a cookie, a body

is(join(',', map { get('/on/orders', 'X-Token: tok-login') } 1 .. 6),
	join(',', ('403 blocked') x 6), 'token blocked, by every worker');
is(get('/on/orders', 'Cookie: a=b; sid=cookie-1'), '403 blocked', 'cookie');
is(post('/on/orders', '{"user":"body-1"}'), '403 blocked', 'request body');
is(get('/on/orders', 'X-Token: tok-other'), '200 -', 'other key passes');
is(post('/on/orders', '{"user":"body-2"}'), '200 -', 'other body passes');
is(get('/on/orders', 'X-Token: tok-ttl'), '403 blocked', 'before expiry');

# the first key with a value decides, as in the record
is(get('/on/orders', 'X-Token: tok-other', 'Cookie: sid=cookie-1'), '200 -',
	'an earlier key wins');

# dry_run, off, custom status

is(get('/dry/orders', 'X-Token: tok-login'), '200 dry_run', 'dry run passes');
is(get('/off/orders', 'X-Token: tok-login'), '200 -', 'off');
is(get('/custom/orders', 'X-Token: tok-login'), '429 blocked',
	'custom status');

# expiry

select undef, undef, undef, $ttl + 1.1 - time() if $ttl + 1.1 > time();
is(get('/on/orders', 'X-Token: tok-ttl'), '200 -', 'expired entry');

# the records

my $blocked = 6 + 3 + 1;
my $dry = 1;

my @records = $t->wait_records(4 + $blocked + $dry + 5);
my @b = grep { ($_->{blocked} // '') eq 'blocked' } @records;
my @d = grep { ($_->{blocked} // '') eq 'dry_run' } @records;
is(scalar @b, $blocked, 'records of blocked requests');
is(scalar(grep { $_->{status} == 403 || $_->{status} == 429 } @b), $blocked,
	'blocked records have the block status');
is(join(',', map { $_->{key_hash} } @d), $hash{token}, 'dry run record');
is(scalar(grep { exists $_->{blocked} } @records), $blocked + $dry,
	'others have no "blocked"');

# unblock: a new document without the cookie

publish(2, entry($hash{token}), entry($hash{body}));
is(get('/on/orders', 'Cookie: sid=cookie-1'), '200 -', 'unblocked');
is(get('/on/orders', 'X-Token: tok-login'), '403 blocked', 'still blocked');
$blocked++;

# the source down: the last good list stays

my $errors = status_json('/status')->{denylist_errors};
$t->write_file('down', '');
$s = wait_status('/status', sub { $_[0]{denylist_errors} > $errors });
ok($s->{denylist_errors} > $errors, 'source down counted');
is($s->{denylist_version}, 2, 'source down: version kept');
is(get('/on/orders', 'X-Token: tok-login'), '403 blocked',
	'source down: still blocked');
$blocked++;
ok(wait_log($t, qr/\[error\].*GET "http:[^"]+\/denylist" answered 503, version 2 stays in use/),
	'source down logged');
unlink($t->testdir() . '/down');

# a malformed document, then a bad hash: refused whole

$errors = status_json('/status')->{denylist_errors};
document('{"version":3,"entries":[');
$s = wait_status('/status', sub { $_[0]{denylist_errors} > $errors });
ok($s->{denylist_errors} > $errors, 'malformed document counted');
is($s->{denylist_version}, 2, 'malformed document: version kept');
is(get('/on/orders', 'X-Token: tok-login'), '403 blocked',
	'malformed document: still blocked');
$blocked++;
ok(wait_log($t, qr/\[error\].*denylist from "http:[^"]+" refused, invalid document: EOF while parsing a list/),
	'malformed document logged');

$errors = $s->{denylist_errors};
document('{"version":3,"entries":[' . entry($hash{cookie}) . ','
	. entry('XYZ') . ']}');
$s = wait_status('/status', sub { $_[0]{denylist_errors} > $errors });
is($s->{denylist_version}, 2, 'bad hash: refused whole');
is(get('/on/orders', 'Cookie: sid=cookie-1'), '200 -',
	'bad hash: nothing of it in use');
ok(wait_log($t, qr/refused, invalid key_hash "XYZ" in entry 1/),
	'bad hash logged');

# reload keeps the list and the counters

publish(4, entry($hash{token}));
$t->reload();
is(status_json('/status')->{denylist_version}, 4, 'reload: version kept');
is(get('/on/orders', 'X-Token: tok-login'), '403 blocked', 'reload: blocked');
$blocked++;

# counters

$s = status_json('/status');
is($s->{blocked}, $blocked, 'blocked counter');
is($s->{block_dry_run}, $dry, 'dry run counter');
is($s->{denylist_entries}, 1, 'entries counter');

my $r = http_get('/status?format=prometheus');
like($r, qr/^api_sessions_blocked_total $blocked\r?$/m, 'prometheus: blocked');
like($r, qr/^api_sessions_denylist_version 4\r?$/m, 'prometheus: version');

$t->stop();

###############################################################################
