;;; ob-chat-ai-messages.el --- The messages a chat-ai block sends  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; A chat-ai block's body may hold several turns of a conversation.  A
;; marker at the start of a line opens a turn:
;;
;;   [system]: You are terse.
;;   [user]: What is Org?
;;   [assistant]: An outliner.
;;   [user]: And Babel?
;;
;; The roles are system, developer, user and assistant; org-ai's
;; [SYS]:, [ME]: and [AI]: work too.  Text before any marker is a user
;; turn.  A backslash before a marker, \[user]:, keeps the line as text.
;;
;; Blocks that share a :session form one conversation in document
;; order: each earlier block contributes the turns it sent, and its
;; #+RESULTS: as the assistant's answer, without chat-ai's own lines.
;; An earlier block whose reply is still on its way, or whose result is
;; an error, a cancelled note or a placeholder, has no answer to give:
;; the session stops there with a line naming it.
;;
;; $name and ${name} in the body are replaced by the value of the
;; block's :var name.

;;; Code:

;;;; Requirements

(require 'ob)
(require 'org-element)
(require 'seq)
(require 'subr-x)
(require 'ob-chat-ai-reply)
(require 'ob-chat-ai-files)
(require 'ob-chat-ai-index)

;;;; Turns in a block

(defconst ob-chat-ai-messages--roles
  '(("system" . "system") ("developer" . "developer") ("user" . "user")
    ("assistant" . "assistant") ("sys" . "system") ("me" . "user")
    ("ai" . "assistant"))
  "Turn markers, without brackets and in lower case, and the roles they open.")

(defconst ob-chat-ai-messages--marker
  (concat "^\\(\\\\\\)?\\[\\("
          (regexp-opt (mapcar #'car ob-chat-ai-messages--roles))
          "\\)\\]:[ \t]?")
  "The regexp of a turn marker at the start of a line, perhaps escaped.")

(defun ob-chat-ai-messages-turns (text)
  "Return the (ROLE . CONTENT) pairs of TEXT, in order.
Without any marker, TEXT is one user turn, exactly as written.
Otherwise each turn's content is trimmed, and empty turns are
dropped.  An escaped marker loses its backslash and stays text."
  (let ((case-fold-search t)
        (turns nil)
        (role "user")
        (lines nil)
        (marked nil))
    (dolist (line (split-string text "\n"))
      (cond
       ((not (string-match ob-chat-ai-messages--marker line))
        (push line lines))
       ((match-beginning 1)
        (push (substring line 1) lines))
       (t
        (push (cons role (string-join (nreverse lines) "\n")) turns)
        (setq marked t
              role (cdr (assoc (downcase (match-string 2 line))
                               ob-chat-ai-messages--roles))
              lines (list (substring line (match-end 0)))))))
    (push (cons role (string-join (nreverse lines) "\n")) turns)
    (if (not marked)
        turns
      (seq-remove (lambda (turn) (string-empty-p (cdr turn)))
                  (mapcar (lambda (turn) (cons (car turn) (string-trim (cdr turn))))
                          (nreverse turns))))))

;;;; Variables

(defun ob-chat-ai-messages-substitute (text vars)
  "Return TEXT with $NAME and ${NAME} replaced by the values in VARS.
VARS is an alist of (NAME . VALUE) as `org-babel--get-vars' gives
it; a table becomes Org table text.  Names that VARS lacks stay."
  (if (null vars)
      text
    (replace-regexp-in-string
     "\\$\\(?:{\\([[:alnum:]_-]+\\)}\\|\\([[:alpha:]_][[:alnum:]_-]*\\)\\)"
     (lambda (match)
       (let* ((name (or (match-string 1 match) (match-string 2 match)))
              (entry (assq (intern name) vars)))
         (if entry
             (save-match-data (ob-chat-ai-messages--value-text (cdr entry)))
           match)))
     text t t)))

(defun ob-chat-ai-messages--value-text (value)
  "Return VALUE, a Babel variable's value, as text for a prompt."
  (cond
   ((stringp value) value)
   ((and (consp value) (seq-some #'listp value))
    (orgtbl-to-orgtbl value nil))
   ((consp value) (mapconcat (lambda (item) (format "%s" item)) value "\n"))
   (t (format "%s" value))))

(declare-function orgtbl-to-orgtbl "org-table" (table params))

;;;; Threads across blocks

(defun ob-chat-ai-messages-block-turns (body params)
  "Return what a block with BODY and PARAMS sends, as (ROLE . CONTENT) pairs.
BODY is the block's body as Babel hands it over, its noweb
references expanded; its $variables are replaced by the values of
the :var header args in PARAMS."
  (ob-chat-ai-messages-turns
   (ob-chat-ai-messages-substitute body (org-babel--get-vars params))))

(defun ob-chat-ai-messages--own (entry)
  "Return (SESSION PURE . PAIRS) for the block of index ENTRY.
SESSION is the name of its :session or nil.  PURE is non-nil when
what it sends depends on its own text alone: it has no :var, no
noweb references expanded, no :image or :file, and no header arg
that Babel evaluates as Lisp.  PAIRS are then the roles and contents
it sends."
  (or (ob-chat-ai-index-entry-memo entry)
      (setf (ob-chat-ai-index-entry-memo entry)
            (let* ((params (ob-chat-ai-index-entry-params entry))
                   (pure (ob-chat-ai-messages--pure-p params)))
              (cons (ob-chat-ai-messages-session params)
                    (cons pure (and pure (ob-chat-ai-messages-turns
                                          (ob-chat-ai-index-entry-body entry)))))))))

(defun ob-chat-ai-messages--pure-p (params)
  "Return non-nil when a block with PARAMS sends its body's text alone.
PARAMS are its header args as Babel reads them without evaluating any."
  (not (or (assq :var params)
           (org-babel-noweb-p params :eval)
           (ob-chat-ai--param params :image)
           (ob-chat-ai--param params :file)
           (seq-some (lambda (pair)
                       (and (stringp (cdr pair))
                            (or (string-match-p "\\`[('`]" (cdr pair))
                                (equal (cdr pair) "*this*"))))
                     params))))

(defun ob-chat-ai-messages--sent (entry)
  "Return (PARAMS . PAIRS): the header args of ENTRY's block and what it sent.
A block whose turns depend on more than its own text is read again,
its :var values, noweb references and files with it."
  (let ((own (ob-chat-ai-messages--own entry)))
    (if (cadr own)
        (cons (ob-chat-ai-index-entry-params entry) (cddr own))
      (save-excursion
        (goto-char (ob-chat-ai-index-start entry))
        (let* ((info (ob-chat-ai-index-block-info (ob-chat-ai-index-element entry)))
               (params (nth 2 info)))
          (cons params
                (ob-chat-ai-messages--with-header-files
                 (ob-chat-ai-messages-block-turns
                  (if (org-babel-noweb-p params :eval)
                      (org-babel-expand-noweb-references info)
                    (nth 1 info))
                  params)
                 params)))))))

(defun ob-chat-ai-messages--reply (entry result)
  "Return (UNFINISHED TOOL-TURNS . ANSWER) for RESULT, of ENTRY's block.
UNFINISHED is the line saying that the reply is not whole, or nil;
TOOL-TURNS replay its tool calls; ANSWER is what the model said, or nil."
  (let ((memo (ob-chat-ai-index-entry-result-memo entry)))
    (if (equal (car memo) result)
        (cdr memo)
      (let ((reply (cons (ob-chat-ai-reply-unfinished result)
                         (cons (ob-chat-ai-messages--tool-turns
                                (ob-chat-ai-reply-tool-records result))
                               (ob-chat-ai-reply-answer result)))))
        (setf (ob-chat-ai-index-entry-result-memo entry) (cons result reply))
        reply))))

(defun ob-chat-ai-messages--in-session (entries session here)
  "Return the index ENTRIES of the blocks of SESSION before HERE, in order."
  (let ((found nil))
    (while (and entries (< (ob-chat-ai-index-start (car entries)) here))
      (when (equal (car (ob-chat-ai-messages--own (car entries))) session)
        (push (car entries) found))
      (setq entries (cdr entries)))
    (nreverse found)))

(defun ob-chat-ai-messages-session-blocks (session here)
  "Return where the chat-ai blocks of SESSION before HERE start, in order."
  (ob-chat-ai-index-call
   (lambda (entries)
     (mapcar #'ob-chat-ai-index-start
             (ob-chat-ai-messages--in-session entries session here)))))

(defun ob-chat-ai-messages-block-session (position)
  "Return the :session of the chat-ai block whose #+begin_src is at POSITION.
Return nil when it has none, or when no chat-ai block starts there."
  (ob-chat-ai-index-call
   (lambda (entries)
     (let ((entry (seq-find (lambda (entry) (= (ob-chat-ai-index-start entry) position))
                            entries)))
       (and entry (car (ob-chat-ai-messages--own entry)))))))

(defun ob-chat-ai-messages-history (session here busy-p &optional lenient)
  "Return the conversation so far of SESSION, from the blocks before HERE.
Each chat-ai block of SESSION contributes the turns it sent, then
what the model answered in its result; chat-ai's own lines there
are left out, and a block without a result contributes its turns
alone.  Return (TURNS . SYSTEM), SYSTEM being the :system of the
first of those blocks.
A block that is not done has no answer to give: BUSY-P, called with
its position, says its reply is on its way, or its result is no
whole reply (an error, a cancelled request, a placeholder).  Signal
a `user-error' naming it; when LENIENT, let it contribute its turns
alone instead, as a preview or a :cache hash may."
  (ob-chat-ai-index-call
   (lambda (entries)
     (let ((pieces nil)
           (system nil)
           (first t))
       (dolist (entry (ob-chat-ai-messages--in-session entries session here))
         (let* ((block (ob-chat-ai-index-start entry))
                (sent (ob-chat-ai-messages--sent entry))
                (result (ob-chat-ai-index-result entry))
                (busy (funcall busy-p block))
                (reply (and result (ob-chat-ai-messages--reply entry result)))
                (unfinished (car reply))
                (where (lambda ()
                         (format "The block at line %d, earlier in session %s,"
                                 (line-number-at-pos block) session))))
           (unless lenient
             (when busy
               (ob-chat-ai--user-error "%s is still answering; run this block \
when its reply is in" (funcall where)))
             (when unfinished
               (ob-chat-ai--user-error "%s has no whole reply (%s); run it again first"
                                       (funcall where) unfinished)))
           (when first
             (setq system (cdr (assq :system (car sent)))
                   first nil))
           (push (cdr sent) pieces)
           (when (and result (not busy) (not unfinished))
             (push (cadr reply) pieces)
             (when (cddr reply)
               (push (list (cons "assistant" (cddr reply))) pieces)))))
       ;; The turns kept in the index are copied, not shared.
       (cons (apply #'append (nreverse (cons nil pieces))) system)))))

(defun ob-chat-ai-messages--with-header-files (pairs params)
  "Return PAIRS, the roles and contents of an earlier block, with its files.
The files of the :image and :file header args in its PARAMS join its
last user turn, which becomes content parts, as when that block ran:
its links resolve in the Org file's directory, its header args in its
own :dir, and its :detail applies."
  (let* ((dir (cdr (assq :dir params)))
         (default-directory (if dir
                                (file-name-as-directory (expand-file-name dir))
                              default-directory))
         (extra (ob-chat-ai-files-header-parts params))
         (last (car (last (seq-filter (lambda (turn) (equal (car turn) "user"))
                                      pairs)))))
    (if (not (and extra last))
        pairs
      (mapcar (lambda (turn)
                (if (not (eq turn last))
                    turn
                  (let ((content (ob-chat-ai-files-content
                                  (cdr turn)
                                  (ob-chat-ai-files--document-directory)
                                  (ob-chat-ai-files-detail params))))
                    (cons "user"
                          (vconcat (if (stringp content)
                                       `(((type . "text") (text . ,content)))
                                     content)
                                   extra)))))
              pairs))))

(defun ob-chat-ai-messages--tool-turns (records)
  "Return the messages that replay each tool call of RECORDS as it was sent.
Each round is the assistant's message with its calls, then a tool
message per call; such turns are (:message . MESSAGE)."
  (let ((turns nil))
    (dolist (round (seq-group-by #'car records))
      (setq turns
            (append turns
                    (mapcar (lambda (message) (cons :message message))
                            (ob-chat-ai-tools-messages
                             (mapcar #'cadr (cdr round))
                             (mapcar #'caddr (cdr round)))))))
    turns))

(declare-function ob-chat-ai-tools-messages "ob-chat-ai-tools" (requested values))

(defun ob-chat-ai-messages-session (params)
  "Return the name of the :session in PARAMS, or nil when there is none."
  (let ((session (cdr (assq :session params))))
    (and session (not (member session '("" "none"))) (format "%s" session))))

(provide 'ob-chat-ai-messages)

;;; ob-chat-ai-messages.el ends here
