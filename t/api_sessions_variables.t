#!/usr/bin/perl

# Tests for ngx_http_api_sessions_module: $api_session_id and
# $api_session_key at the log phase.  Whatever evaluated them earlier
# (add_header, proxy_set_header), access_log sees the response body and
# writes the session of the record.

###############################################################################

use warnings;
use strict;

use Test::More;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::Nginx;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http proxy api_sessions/)->plan(9);

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    api_sessions_secret secret;
    api_sessions_export file=%%TESTDIR%%/api_sessions.ndjson flush=100ms;

    log_format sessions '$request_id $api_session_id $api_session_key';

    # the API behind: the login response returns the session token
    server {
        listen       127.0.0.1:%%PORT_8081%%;
        server_name  backend;

        default_type application/json;

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
        api_sessions_key $arg_token name=token;

        access_log %%TESTDIR%%/sessions.log sessions;

        location /header/ {
            add_header X-Session-Id $api_session_id always;
            add_header X-Session-Key $api_session_key always;
            proxy_pass http://127.0.0.1:%%PORT_8081%%/;
        }

        location /upstream/ {
            proxy_set_header X-Session $api_session_id;
            proxy_pass http://127.0.0.1:%%PORT_8081%%/;
        }

        location /log/ {
            proxy_pass http://127.0.0.1:%%PORT_8081%%/;
        }
    }
}

EOF

$t->write_file('secret', "fedcba9876543210fedcba9876543210\n");
$t->run();

###############################################################################

my %header;

for my $loc (qw/ header upstream log /) {
	my $r = http(<<EOF);
GET /$loc/login HTTP/1.0
Host: localhost
User-Agent: variables-agent
X-Issue: tok-$loc

EOF

	$header{$loc} = [ http_header($r, 'X-Session-Id'),
		http_header($r, 'X-Session-Key') ];
}

# the token, sent back on a later request: the same session
http_get('/header/orders?token=tok-header');

my @records = $t->wait_records(4);

$t->stop();

my %logged = map { my @f = split ' '; $f[0] => [ @f[1, 2] ] }
	split /\n/, $t->read_file('sessions.log');

my %record = map { $_->{path} => $_ } @records;

sub logged_as_recorded {
	my ($path) = @_;

	my $rec = $record{$path} or return "no record of $path";
	my $log = $logged{$rec->{request_id}}
		or return "no access_log line for $path";

	return "$path: access_log @$log, record $rec->{session_id} "
		. $rec->{session_key}
		unless $log->[0] eq $rec->{session_id}
			&& $log->[1] eq $rec->{session_key};

	return 'ok';
}

is(logged_as_recorded('/header/login'), 'ok',
	'access_log after add_header: the record\'s session');
is(logged_as_recorded('/upstream/login'), 'ok',
	'access_log after proxy_set_header: the record\'s session');
is(logged_as_recorded('/log/login'), 'ok',
	'access_log alone: the record\'s session');
is(logged_as_recorded('/header/orders'), 'ok',
	'access_log of a request-side key');

is(join(' ', map { $record{"/$_/login"}{session_key} // 'none' }
	qw/ header upstream log /), 'token token token',
	'login responses resolve the token key');
is($record{'/header/orders'}{session_id},
	$record{'/header/login'}{session_id},
	'token sent back: the login\'s session');

# before the log phase the response body is not known yet: the header
# shows the session the request alone resolves, the built-in key here
is($header{header}[1], 'ip+ua', 'add_header: request-side key');
isnt($header{header}[0], $record{'/header/login'}{session_id},
	'add_header: not the response\'s session');
is_deeply($header{log}, [ undef, undef ], 'no headers where not asked for');

###############################################################################
